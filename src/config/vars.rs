//! Reading single values: a view over the variables that treats empty as
//! unset, the error that names a variable, and the checks of values whose
//! shape `FromStr` does not know (versions, origins, host names).

use std::collections::HashMap;

use super::ConfigError;

pub(super) fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// A view over variables: the process environment, or a map in tests.
pub(super) struct Vars<'a>(pub(super) &'a HashMap<String, String>);

impl Vars<'_> {
    /// The value, with empty strings treated as unset (as `.env` files
    /// commonly leave `REDIS_PASSWORD=`).
    pub(super) fn get(&self, var: &str) -> Option<&str> {
        self.0.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub(super) fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
        expected: &str,
        valid: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => match raw.parse::<T>() {
                Ok(v) if valid(&v) => Ok(v),
                _ => Err(err(var, format!("expected {expected}, got {raw:?}"))),
            },
        }
    }

    pub(super) fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(err(var, format!("expected true or false, got {other:?}"))),
        }
    }
}

/// Whether `raw` looks like `2.95.0`: three dot-separated runs of digits.
pub(super) fn is_version(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| (1..=4).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `raw` is a browser origin: `http(s)://host[:port]`, nothing more
/// (the `Origin` header never carries a path, a query or a trailing slash).
pub(super) fn is_origin(raw: &str) -> bool {
    let Some(rest) = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
    else {
        return false;
    };
    let (host_ok, port) = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, after)) => (
                addr.parse::<std::net::Ipv6Addr>().is_ok(),
                match after {
                    "" => None,
                    p => match p.strip_prefix(':') {
                        Some(p) => Some(p),
                        None => return false,
                    },
                },
            ),
            None => return false,
        }
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        (ok, port)
    };
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Whether `name` is what `ALLOWED_HOSTS` takes: a DNS name or IPv4
/// address (letters, digits, `-`, `.`), or an IPv6 address in brackets.
pub(super) fn is_host_name(name: &str) -> bool {
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Percent-encodes a password for a URL's userinfo part.
pub(super) fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
