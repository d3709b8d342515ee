//! Listen addresses: `:PORT` (every interface), `HOST:PORT`, `[IPv6]:PORT`.

/// A listen address: `:PORT` means every interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Every interface (IPv6 and IPv4 where available).
    Any(u16),
    /// A host (name or address) and port.
    Host(String, u16),
}

/// Parses `:9877`, `127.0.0.1:9877`, `localhost:9877`, `[::1]:9877`.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected HOST:PORT or :PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    if host.is_empty() {
        return Ok(Listen::Any(port));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(format!("{s:?}: invalid host"));
    }
    Ok(Listen::Host(host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen(":9877"), Ok(Listen::Any(9877)));
        assert_eq!(
            parse_listen("127.0.0.1:1"),
            Ok(Listen::Host("127.0.0.1".into(), 1))
        );
        assert_eq!(
            parse_listen("[::1]:9100"),
            Ok(Listen::Host("::1".into(), 9100))
        );
        assert!(parse_listen("9100").is_err());
        assert!(parse_listen(":http").is_err());
    }
}
