//! Settings that change while the server runs (extra DNS records, the DERP map): replacing one updates the shared
//! cell in [`Settings`](crate::Settings) and pushes the new value to every connected client of every tenant.

use crate::Control;
use crate::render;
use tailwarden_wire::{DerpMap, DnsRecord, MapResponse};

impl Control {
    /// Replaces the extra DNS records. When they differ from the current ones, every connected client receives
    /// its new DNS configuration at once (no reconnect) and `true` is returned.
    pub fn set_extra_records(&self, records: Vec<DnsRecord>) -> bool {
        if !self.settings.dns.extra_records.replace(records) {
            return false;
        }
        self.broadcast(&MapResponse { dns_config: Some(render::dns_config(&self.settings)), ..Default::default() });
        true
    }

    /// Replaces the DERP map. When it differs from the current one, every connected client receives it at once
    /// and `true` is returned.
    pub fn set_derp_map(&self, map: DerpMap) -> bool {
        if !self.settings.derp_map.replace(map) {
            return false;
        }
        let map = self.settings.derp_map.get().as_ref().clone();
        self.broadcast(&MapResponse { derp_map: Some(map), ..Default::default() });
        true
    }

    /// Sends `msg` to every session of every tenant. Tailnets loaded after this call render the new value anyway.
    fn broadcast(&self, msg: &MapResponse) {
        let tailnets: Vec<_> = self.tailnets_lock().values().cloned().collect();
        for tailnet in tailnets {
            tailnet.broadcast(msg);
        }
    }
}
