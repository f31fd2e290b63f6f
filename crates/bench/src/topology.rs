//! Who should see whom: simulated clients are numbered, grouped, owned by generated users, and a generated
//! policy lets each group reach itself (plus optional "bridges" between two groups). The generator predicts every
//! watcher's view from this model, so it can tell affected from unaffected watchers without asking the server.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::ops::Range;

/// The policy that lets every node reach every other.
pub const ALLOW_ALL: &str = r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#;

/// A pair of groups that may reach each other, smaller index first.
pub type Bridge = (usize, usize);

/// Clients split into groups of `group_size`, each group's nodes owned by users holding `nodes_per_user` nodes.
#[derive(Clone, Debug)]
pub struct Groups {
    /// Number of clients.
    pub clients: usize,
    /// Clients per group (the last group may be smaller).
    pub group_size: usize,
    /// Nodes per user.
    pub nodes_per_user: usize,
    /// Prefix of every generated user and group name, unique per run.
    pub prefix: String,
}

impl Groups {
    /// Number of groups.
    pub fn count(&self) -> usize {
        self.clients.div_ceil(self.group_size)
    }

    /// The group of client `i`.
    pub fn group_of(&self, i: usize) -> usize {
        i / self.group_size
    }

    /// The clients of group `g`.
    pub fn members(&self, g: usize) -> Range<usize> {
        g * self.group_size..((g + 1) * self.group_size).min(self.clients)
    }

    /// Number of users in group `g`.
    pub fn users_in(&self, g: usize) -> usize {
        self.members(g).len().div_ceil(self.nodes_per_user)
    }

    /// The user (group, index within group) that owns client `i`.
    pub fn user_of(&self, i: usize) -> (usize, usize) {
        let g = self.group_of(i);
        (g, (i - g * self.group_size) / self.nodes_per_user)
    }

    /// A generated user's name.
    pub fn user_name(&self, g: usize, u: usize) -> String {
        format!("{}-g{g}-u{u}", self.prefix)
    }

    fn group_name(&self, g: usize) -> String {
        format!("group:{}-g{g}", self.prefix)
    }

    /// Whether clients `a` and `b` see each other, given the active bridges.
    pub fn sees(&self, a: usize, b: usize, bridges: &BTreeSet<Bridge>) -> bool {
        let (ga, gb) = (self.group_of(a), self.group_of(b));
        ga == gb || bridges.contains(&(ga.min(gb), ga.max(gb)))
    }

    /// The policy: each group may reach itself, each bridge joins two groups. Users are referenced as `name@`,
    /// the form both Headscale's policy v2 and tailwarden resolve to a user by name.
    pub fn policy(&self, bridges: &BTreeSet<Bridge>) -> String {
        let groups: serde_json::Map<String, Value> = (0..self.count())
            .map(|g| {
                (
                    self.group_name(g),
                    (0..self.users_in(g)).map(|u| Value::String(format!("{}@", self.user_name(g, u)))).collect(),
                )
            })
            .collect();
        let rule = |src: usize, dst: usize| json!({ "action": "accept", "src": [self.group_name(src)], "dst": [format!("{}:*", self.group_name(dst))] });
        let mut acls: Vec<Value> = (0..self.count()).map(|g| rule(g, g)).collect();
        acls.extend(bridges.iter().map(|&(a, b)| rule(a, b)));
        json!({ "groups": groups, "acls": acls }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_users_and_policy_agree() {
        let t = Groups { clients: 25, group_size: 10, nodes_per_user: 4, prefix: "lg".into() };
        assert_eq!((t.count(), t.members(2), t.users_in(0), t.users_in(2)), (3, 20..25, 3, 2));
        assert_eq!(t.user_of(13), (1, 0));
        assert_eq!(t.user_of(19), (1, 2));
        let none = BTreeSet::new();
        assert!(t.sees(10, 19, &none) && !t.sees(9, 10, &none));
        let bridged = BTreeSet::from([(0, 1)]);
        assert!(t.sees(10, 9, &bridged) && !t.sees(20, 9, &bridged));

        let p: Value = serde_json::from_str(&t.policy(&bridged)).unwrap();
        assert_eq!(p["groups"]["group:lg-g2"], json!(["lg-g2-u0@", "lg-g2-u1@"]));
        assert_eq!(p["acls"].as_array().unwrap().len(), 4);
        assert_eq!(p["acls"][3]["dst"][0], "group:lg-g1:*");
    }
}
