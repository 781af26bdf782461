//! [`Origin`]: a scheme, a host and a port, the unit of what a deployment
//! may call. Parsed once, at the boundary (the command line, a topology
//! file, a deploy request); compared, never re-parsed, afterwards.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS, certificates checked against the Mozilla roots.
    Https,
}

impl Scheme {
    /// The port of a URL that names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The host of an origin: a DNS name (lowercase) or an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A DNS name, lowercase, without a trailing dot.
    Name(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl Host {
    /// Whether calls may reach a non-public address through this host: only
    /// when the host is an address itself or `localhost`, that is when the
    /// deployment named the private destination on purpose.
    pub fn names_its_address(&self) -> bool {
        match self {
            Host::Ip(_) => true,
            Host::Name(n) => n == "localhost",
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// A scheme, a host and a port: `https://api.example.com`,
/// `http://127.0.0.1:8080`. Written without a path; the default port is
/// left out when shown.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// The host.
    pub host: Host,
    /// The port, explicit or the scheme's default.
    pub port: u16,
}

/// Why a text is not an origin (or a URL has no acceptable origin).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an origin: {reason} (write it as https://HOST or http://HOST:PORT)")]
pub struct OriginError {
    text: String,
    reason: &'static str,
}

impl Origin {
    /// The origin of an absolute `http` or `https` URL, and the URL's rest
    /// (path, query), checked to be acceptable in a request line.
    pub fn of_url(url: &str) -> Result<Origin, OriginError> {
        let end = url
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| {
                url[start..]
                    .find(['/', '?', '#'])
                    .map(|j| start + j)
                    .or(Some(url.len()))
            })
            .unwrap_or(url.len());
        let origin = Origin::parse(&url[..end], url)?;
        let rest = &url[end..];
        if rest.contains('#') {
            return Err(error(url, "a request URL has no fragment"));
        }
        if rest.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(error(
                url,
                "its path has spaces or non-ASCII characters: percent-encode them",
            ));
        }
        Ok(origin)
    }

    fn parse(s: &str, whole: &str) -> Result<Origin, OriginError> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(error(whole, "only http:// and https:// are callable"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(error(whole, "an origin has no path, query or fragment"));
        }
        if authority.contains('@') {
            return Err(error(whole, "credentials in the URL are not allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (ip, after) = v6
                .split_once(']')
                .ok_or_else(|| error(whole, "an IPv6 address needs its closing `]`"))?;
            let ip: Ipv6Addr = ip
                .parse()
                .map_err(|_| error(whole, "the IPv6 address is not valid"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| error(whole, "expected `:PORT` after `]`"))?,
                ),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (name, port) = match authority.rsplit_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (authority, None),
            };
            (
                host_of(name).ok_or_else(|| error(whole, "the host is not valid"))?,
                port,
            )
        };
        let port = match port {
            None => scheme.default_port(),
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(error(whole, "the port must be 1 to 65535")),
            },
        };
        Ok(Origin { scheme, host, port })
    }
}

fn error(text: &str, reason: &'static str) -> OriginError {
    OriginError {
        text: text.chars().take(200).collect(),
        reason,
    }
}

/// A host: an IPv4 address or a DNS name of letters, digits, `-` and `.`.
fn host_of(name: &str) -> Option<Host> {
    if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
        return Some(Host::Ip(IpAddr::V4(ip)));
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then_some(Host::Name(name))
}

impl FromStr for Origin {
    type Err = OriginError;
    fn from_str(s: &str) -> Result<Origin, OriginError> {
        Origin::parse(s, s)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Origin, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_shows_canonically() {
        for (text, shown) in [
            ("https://api.example.com", "https://api.example.com"),
            ("https://API.Example.com/", "https://api.example.com"),
            ("https://api.example.com:443", "https://api.example.com"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:9000/", "http://[::1]:9000"),
            ("http://localhost", "http://localhost"),
        ] {
            let o: Origin = text.parse().unwrap();
            assert_eq!(o.to_string(), shown, "{text}");
            assert_eq!(o.to_string().parse::<Origin>().unwrap(), o);
        }
    }

    #[test]
    fn refuses_what_is_not_an_origin() {
        for text in [
            "ftp://example.com",
            "example.com",
            "https://",
            "https://exa mple.com",
            "https://user:pw@example.com",
            "https://example.com/path",
            "https://example.com:0",
            "https://example.com:99999",
            "https://[::1",
            "https://-bad-.com",
            "https://a..b",
        ] {
            let e = text.parse::<Origin>().unwrap_err();
            assert!(e.to_string().contains("is not an origin"), "{text}: {e}");
        }
    }

    #[test]
    fn origin_of_a_url() {
        let o = Origin::of_url("https://api.example.com/v1/users?id=3").unwrap();
        assert_eq!(o, "https://api.example.com".parse().unwrap());
        let o = Origin::of_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(o.port, 8080);
        assert!(Origin::of_url("https://evil.com@api.example.com/").is_err());
        assert!(Origin::of_url("https://api.example.com/a b").is_err());
        assert!(Origin::of_url("https://api.example.com/#x").is_err());
        assert!(Origin::of_url("file:///etc/passwd").is_err());
    }

    #[test]
    fn only_addresses_and_localhost_name_their_address() {
        let o: Origin = "http://10.0.0.5".parse().unwrap();
        assert!(o.host.names_its_address());
        let o: Origin = "http://localhost:1".parse().unwrap();
        assert!(o.host.names_its_address());
        let o: Origin = "https://api.example.com".parse().unwrap();
        assert!(!o.host.names_its_address());
    }

    #[test]
    fn serde_as_text() {
        let o: Origin = serde_json::from_str(r#""https://a.example""#).unwrap();
        assert_eq!(serde_json::to_string(&o).unwrap(), r#""https://a.example""#);
        assert!(serde_json::from_str::<Origin>(r#""gopher://a""#).is_err());
    }
}
