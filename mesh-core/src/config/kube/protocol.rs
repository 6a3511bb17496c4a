//! Port protocol selection as Istio does it: from a Service port's name
//! (`<protocol>[-<suffix>]`), its `appProtocol` (which wins over the name),
//! or a ServiceEntry/Gateway `protocol` string.
//!
//! Only the declared protocol is computed here; what the data plane does with
//! an undeclared port (sniffing, or plain TCP) is the compiler's business.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An application protocol as Istio names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Plaintext HTTP/1.1 (`http`).
    Http,
    /// Plaintext HTTP/2 (`http2`).
    Http2,
    /// TLS-encrypted HTTP; a sidecar treats it like `tls` (`https`).
    Https,
    /// gRPC, i.e. HTTP/2 (`grpc`).
    Grpc,
    /// gRPC-Web, i.e. HTTP/2 for the proxy (`grpc-web`).
    GrpcWeb,
    /// An explicit HTTP proxy (`http_proxy`).
    HttpProxy,
    /// Opaque TCP (`tcp`).
    Tcp,
    /// TLS, not terminated by a sidecar (`tls`).
    Tls,
    /// MongoDB (`mongo`); opaque TCP unless the protocol filter is enabled.
    Mongo,
    /// MySQL (`mysql`); opaque TCP unless the protocol filter is enabled.
    Mysql,
    /// Redis (`redis`); opaque TCP unless the protocol filter is enabled.
    Redis,
    /// UDP (`udp` or a Kubernetes port with `protocol: UDP`); not proxied.
    Udp,
    /// Nothing declared, or a name Istio does not recognise.
    Unknown,
}

impl Protocol {
    /// Every protocol, in a stable order.
    pub const ALL: [Protocol; 13] = [
        Protocol::Http,
        Protocol::Http2,
        Protocol::Https,
        Protocol::Grpc,
        Protocol::GrpcWeb,
        Protocol::HttpProxy,
        Protocol::Tcp,
        Protocol::Tls,
        Protocol::Mongo,
        Protocol::Mysql,
        Protocol::Redis,
        Protocol::Udp,
        Protocol::Unknown,
    ];

    /// Parses an exact protocol name, case-insensitively (`http`, `HTTP2`,
    /// `grpc-web`, `http_proxy`, ...). Anything else is `Unknown`.
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http_proxy" => Protocol::HttpProxy,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "mysql" => Protocol::Mysql,
            "redis" => Protocol::Redis,
            "udp" => Protocol::Udp,
            _ => Protocol::Unknown,
        }
    }

    /// The protocol a port name declares: `<protocol>` or
    /// `<protocol>-<suffix>`, case-insensitive (`http`, `http-web`,
    /// `GRPC-api`, `grpc-web-ui`). `web`, `httpfoo` or an empty name declare
    /// nothing.
    pub fn from_port_name(name: &str) -> Protocol {
        const GRPC_WEB: &str = "grpc-web";
        // `grpc-web` contains the separator, so it is checked as a prefix first.
        if name.len() >= GRPC_WEB.len()
            && name.is_char_boundary(GRPC_WEB.len())
            && name[..GRPC_WEB.len()].eq_ignore_ascii_case(GRPC_WEB)
        {
            return Protocol::GrpcWeb;
        }
        let prefix = name.split('-').next().unwrap_or(name);
        Protocol::parse(prefix)
    }

    /// The protocol a Kubernetes `appProtocol` declares: the Kubernetes
    /// standard names (`kubernetes.io/h2c` is HTTP/2, `kubernetes.io/ws` is
    /// HTTP, `kubernetes.io/wss` is HTTPS), otherwise the same
    /// `<protocol>[-<suffix>]` rule as port names.
    pub fn from_app_protocol(app_protocol: &str) -> Protocol {
        match app_protocol {
            "kubernetes.io/h2c" => Protocol::Http2,
            "kubernetes.io/ws" => Protocol::Http,
            "kubernetes.io/wss" => Protocol::Https,
            other => Protocol::from_port_name(other),
        }
    }

    /// The protocol of a ServiceEntry, Gateway or Sidecar port `protocol`
    /// field (`HTTP`, `HTTPS`, `GRPC`, `GRPC-WEB`, `HTTP2`, `MONGO`, `TCP`,
    /// `TLS`, `MYSQL`, `REDIS`, ...), case-insensitive and exact.
    pub fn from_istio(protocol: &str) -> Protocol {
        Protocol::parse(protocol)
    }

    /// The protocol declared by a port's name and `appProtocol`. As in Istio,
    /// a non-empty `appProtocol` takes precedence over the name, even when it
    /// names a protocol Istio does not know (the name is then not consulted).
    pub fn declared(name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
        match (app_protocol.filter(|a| !a.is_empty()), name) {
            (Some(app), _) => Protocol::from_app_protocol(app),
            (None, Some(name)) => Protocol::from_port_name(name),
            (None, None) => Protocol::Unknown,
        }
    }

    /// The protocol Istio assigns a Kubernetes Service port: `UDP` for
    /// `protocol: UDP`, else the declared protocol, and `TCP` for an
    /// undeclared port on a well-known server-first port (25 SMTP, 53 DNS,
    /// 3306 MySQL, 27017 MongoDB) where protocol sniffing would break the
    /// application.
    pub fn for_service_port(
        port: u32,
        name: Option<&str>,
        ip_protocol: Option<&str>,
        app_protocol: Option<&str>,
    ) -> Protocol {
        if ip_protocol.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
            return Protocol::Udp;
        }
        match Protocol::declared(name, app_protocol) {
            Protocol::Unknown if matches!(port, 25 | 53 | 3306 | 27017) => Protocol::Tcp,
            p => p,
        }
    }

    /// True for the protocols where HTTP-level features (routes, HTTP
    /// authorization fields, retries) apply: HTTP, HTTP2, GRPC, GRPC-WEB and
    /// HTTP_PROXY.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::HttpProxy
        )
    }

    /// True for HTTP/2-based protocols: HTTP2, GRPC and GRPC-WEB.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// True for gRPC and gRPC-Web.
    pub fn is_grpc(self) -> bool {
        matches!(self, Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// True for protocols proxied as TCP streams (no HTTP processing): TCP,
    /// HTTPS, TLS, Mongo, MySQL and Redis.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Mysql
                | Protocol::Redis
        )
    }

    /// True for TLS-carrying protocols: HTTPS and TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// True when no protocol was declared (or it was not recognised).
    pub fn is_unknown(self) -> bool {
        self == Protocol::Unknown
    }

    /// The canonical upper-case name, as ServiceEntry ports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Https => "HTTPS",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "MONGO",
            Protocol::Mysql => "MYSQL",
            Protocol::Redis => "REDIS",
            Protocol::Udp => "UDP",
            Protocol::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

// The exact spelling `Serialize` writes, so a model read back (from xDS
// metadata) has the protocols it was written with; `Protocol::parse` would
// turn a misspelling into `Unknown` silently.
impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown protocol {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_name_table() {
        let table = [
            ("http", Protocol::Http),
            ("http-foo", Protocol::Http),
            ("HTTP", Protocol::Http),
            ("Http-Web", Protocol::Http),
            ("http2", Protocol::Http2),
            ("http2-api", Protocol::Http2),
            ("https", Protocol::Https),
            ("https-admin", Protocol::Https),
            ("grpc", Protocol::Grpc),
            ("grpc-api", Protocol::Grpc),
            ("grpc-web", Protocol::GrpcWeb),
            ("GRPC-WEB-ui", Protocol::GrpcWeb),
            ("grpc-webfoo", Protocol::GrpcWeb),
            ("tcp", Protocol::Tcp),
            ("tcp-db", Protocol::Tcp),
            ("tls", Protocol::Tls),
            ("tls-passthrough", Protocol::Tls),
            ("mongo", Protocol::Mongo),
            ("mongo-primary", Protocol::Mongo),
            ("mysql", Protocol::Mysql),
            ("redis", Protocol::Redis),
            ("udp-dns", Protocol::Udp),
            ("http_proxy", Protocol::HttpProxy),
            ("web", Protocol::Unknown),
            ("httpfoo", Protocol::Unknown),
            ("foo-http", Protocol::Unknown),
            ("", Protocol::Unknown),
            ("-http", Protocol::Unknown),
            ("grpcé", Protocol::Unknown),
        ];
        for (name, want) in table {
            assert_eq!(Protocol::from_port_name(name), want, "{name:?}");
        }
    }

    #[test]
    fn app_protocol_table() {
        assert_eq!(
            Protocol::from_app_protocol("kubernetes.io/h2c"),
            Protocol::Http2
        );
        assert_eq!(
            Protocol::from_app_protocol("kubernetes.io/ws"),
            Protocol::Http
        );
        assert_eq!(
            Protocol::from_app_protocol("kubernetes.io/wss"),
            Protocol::Https
        );
        assert_eq!(Protocol::from_app_protocol("grpc"), Protocol::Grpc);
        assert_eq!(Protocol::from_app_protocol("HTTP"), Protocol::Http);
        assert_eq!(Protocol::from_app_protocol("mysql"), Protocol::Mysql);
        assert_eq!(
            Protocol::from_app_protocol("nats.io/client"),
            Protocol::Unknown
        );
    }

    #[test]
    fn app_protocol_wins_over_name() {
        assert_eq!(
            Protocol::declared(Some("http-web"), Some("grpc")),
            Protocol::Grpc
        );
        assert_eq!(
            Protocol::declared(Some("database"), Some("mysql")),
            Protocol::Mysql
        );
        assert_eq!(
            Protocol::declared(Some("tcp-x"), Some("example.com/custom")),
            Protocol::Unknown
        );
        assert_eq!(Protocol::declared(Some("http"), Some("")), Protocol::Http);
        assert_eq!(Protocol::declared(Some("http"), None), Protocol::Http);
        assert_eq!(Protocol::declared(None, None), Protocol::Unknown);
    }

    #[test]
    fn service_port_rules() {
        assert_eq!(
            Protocol::for_service_port(53, Some("dns"), Some("UDP"), None),
            Protocol::Udp
        );
        assert_eq!(
            Protocol::for_service_port(80, Some("http"), Some("UDP"), None),
            Protocol::Udp
        );
        assert_eq!(
            Protocol::for_service_port(3306, Some("db"), Some("TCP"), None),
            Protocol::Tcp
        );
        assert_eq!(
            Protocol::for_service_port(27017, None, None, None),
            Protocol::Tcp
        );
        assert_eq!(
            Protocol::for_service_port(8080, Some("web"), None, None),
            Protocol::Unknown
        );
        assert_eq!(
            Protocol::for_service_port(3306, Some("http"), None, None),
            Protocol::Http
        );
    }

    #[test]
    fn istio_protocol_strings() {
        for (s, p) in [
            ("HTTP", Protocol::Http),
            ("HTTPS", Protocol::Https),
            ("GRPC", Protocol::Grpc),
            ("GRPC-WEB", Protocol::GrpcWeb),
            ("HTTP2", Protocol::Http2),
            ("MONGO", Protocol::Mongo),
            ("TCP", Protocol::Tcp),
            ("TLS", Protocol::Tls),
            ("MYSQL", Protocol::Mysql),
            ("REDIS", Protocol::Redis),
            ("HTTP-foo", Protocol::Unknown),
        ] {
            assert_eq!(Protocol::from_istio(s), p, "{s}");
        }
        for p in Protocol::ALL {
            if p != Protocol::Unknown {
                assert_eq!(Protocol::from_istio(p.as_str()), p);
            }
        }
    }

    #[test]
    fn classification() {
        let http: Vec<_> = Protocol::ALL.iter().filter(|p| p.is_http()).collect();
        assert_eq!(
            http,
            [
                &Protocol::Http,
                &Protocol::Http2,
                &Protocol::Grpc,
                &Protocol::GrpcWeb,
                &Protocol::HttpProxy
            ]
        );
        assert!(!Protocol::Https.is_http());
        assert!(Protocol::Https.is_tcp() && Protocol::Https.is_tls());
        assert!(Protocol::Grpc.is_http2() && Protocol::Grpc.is_grpc());
        assert!(!Protocol::Udp.is_tcp() && !Protocol::Udp.is_http());
        assert!(Protocol::Unknown.is_unknown());
        assert_eq!(serde_json::to_value(Protocol::GrpcWeb).unwrap(), "GRPC-WEB");
        assert_eq!(Protocol::Tls.to_string(), "TLS");
    }
}
