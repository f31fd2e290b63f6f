//! The tailnet a policy is compiled against: users and nodes, as plain data.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A user of the tailnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Stable id; orders users where Tailscale orders them.
    pub id: u64,
    /// Login name (e-mail form), the token policies use.
    pub login: String,
    /// Whether the user is a tailnet admin.
    pub admin: bool,
    /// Whether the user owns the tailnet.
    pub owner: bool,
}

/// A node of the tailnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Stable id in creation order (1 = first created).
    pub id: u64,
    /// MagicDNS short name.
    pub name: String,
    /// Owning user's id; `None` for tagged nodes.
    pub user: Option<u64>,
    /// Tags (`tag:…`); non-empty means the node is tagged.
    pub tags: Vec<String>,
    /// Tailscale IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Tailscale IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Routes the node advertises.
    pub routable_ips: Vec<IpNet>,
    /// Advertised routes the admin approved.
    pub approved_routes: Vec<IpNet>,
}

impl Node {
    /// Whether the node is tagged (and so owned by no user).
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    /// The place a deleted node leaves in a compiled policy's node list: no addresses, no
    /// owner, no tags, so nothing selects it.
    pub fn vacant(id: u64) -> Node {
        Node {
            id,
            name: String::new(),
            user: None,
            tags: Vec::new(),
            ipv4: None,
            ipv6: None,
            routable_ips: Vec::new(),
            approved_routes: Vec::new(),
        }
    }

    /// The node's Tailscale addresses, IPv4 first.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.ipv4.map(IpAddr::V4).into_iter().chain(self.ipv6.map(IpAddr::V6)).collect()
    }
}

/// Whether a route is an exit route (`0.0.0.0/0` or `::/0`).
pub fn is_exit_route(net: &IpNet) -> bool {
    net.prefix_len() == 0
}

/// Users and nodes, with nodes in creation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tailnet {
    /// Users.
    pub users: Vec<User>,
    /// Nodes, ordered by id.
    pub nodes: Vec<Node>,
    /// Domains associated with the tailnet: the only ones `user:*@<domain>` may name.
    pub domains: Vec<String>,
}

impl Tailnet {
    /// The user with this login, if any.
    pub fn user_by_login(&self, login: &str) -> Option<&User> {
        self.users.iter().find(|u| u.login == login)
    }
}
