//! The server's long-term private keys, persisted in Headscale's file format (`privkey:<64 hex>`), so a
//! Headscale deployment's `noise_private.key` keeps working and clients need not re-enrol.

use crate::ControlError;
use std::path::Path;
use ts_keys::{MachineKeyPair, X25519KeyPair};

/// The Noise key (identity of the control server) and the DERP server key.
pub struct ServerKeys {
    noise: MachineKeyPair,
    derp_private: [u8; 32],
}

impl ServerKeys {
    /// Loads both keys, generating and saving any that does not exist yet (file mode 0600).
    pub fn load_or_create(noise_path: &Path, derp_path: &Path) -> Result<ServerKeys, ControlError> {
        let noise = load_or_create(noise_path)?;
        let derp = load_or_create(derp_path)?;
        Ok(ServerKeys { noise: ts_keys::Export::<MachineKeyPair>::from_bytes(noise).import(), derp_private: derp })
    }

    /// Fresh random keys (tests).
    pub fn random() -> ServerKeys {
        ServerKeys { noise: MachineKeyPair::random(), derp_private: rand::random() }
    }

    /// The Noise static key pair for the handshake.
    pub fn noise_pair(&self) -> X25519KeyPair {
        self.noise.to_x25519_dalek()
    }

    /// The Noise public key in `mkey:` form, as served on `/key`.
    pub fn noise_public_text(&self) -> String {
        tailwarden_wire::MachineKey(self.noise.to_x25519_dalek().public.to_bytes()).to_string()
    }

    /// The DERP server's private key.
    pub fn derp_private(&self) -> [u8; 32] {
        self.derp_private
    }
}

fn key_error(path: &Path, reason: impl ToString) -> ControlError {
    ControlError::KeyFile { path: path.display().to_string(), reason: reason.to_string() }
}

fn load_or_create(path: &Path) -> Result<[u8; 32], ControlError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_private(text.trim()).ok_or_else(|| key_error(path, "expected privkey:<64 hex characters>")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| key_error(path, e))?;
            }
            write_private(path, &format!("privkey:{}\n", hex::encode(key))).map_err(|e| key_error(path, e))?;
            Ok(key)
        }
        Err(e) => Err(key_error(path, e)),
    }
}

fn parse_private(text: &str) -> Option<[u8; 32]> {
    let hex_part = text.strip_prefix("privkey:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (n, d) = (dir.path().join("noise.key"), dir.path().join("derp.key"));
        let a = ServerKeys::load_or_create(&n, &d).unwrap();
        let b = ServerKeys::load_or_create(&n, &d).unwrap();
        assert_eq!(a.noise_public_text(), b.noise_public_text());
        assert_eq!(a.derp_private(), b.derp_private());
        assert!(std::fs::read_to_string(&n).unwrap().starts_with("privkey:"));
        std::fs::write(&n, "garbage").unwrap();
        let err = ServerKeys::load_or_create(&n, &d).err().unwrap();
        assert!(err.to_string().contains("noise.key"), "{err}");
    }
}
