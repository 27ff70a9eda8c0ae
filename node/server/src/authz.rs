//! Who may call what: roles read from the caller's certificate, checked before every RPC.
//!
//! A certificate carries its roles in the Organization (O) attributes of its subject, as Kubernetes reads
//! a user's groups: `O=drakkar:peer` (a node), `O=drakkar:admin` (the operator, an operator's CLI),
//! `O=drakkar:client` (an application). Other O values are ignored; a certificate may carry several roles.
//! `drakkar cert` and the operator issue certificates with them.
//!
//! | RPCs | roles allowed |
//! |---|---|
//! | `Raft/*` | peer |
//! | `Admin/Status`, `Admin/NodeInfo`, `Admin/GetMembership`, health, reflection | any authenticated caller |
//! | every other `Admin/*` (membership, snapshots, groups) | admin |
//! | `Kv/*`, `StateMachine/*`, `Session/*` | client, admin |
//!
//! A peer may also call any client or Admin RPC that another node forwarded (marked `drakkar-forwarded`):
//! the first node authorized the original caller. A peer is trusted with the Raft log itself, so this
//! grants it nothing it could not do through Raft.
//!
//! A connection without a certificate is refused by the TLS handshake unless the node allows anonymous
//! clients (`--allow-anonymous-clients`); an anonymous caller then has the client role only. Without TLS
//! (`--insecure`) nothing is checked.

use std::sync::atomic::{AtomicU64, Ordering};

use drakkar_client::roles;
use rustls::pki_types::CertificateDer;
use tonic::Status;

/// A role a certificate can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A node: speaks Raft, forwards requests.
    Peer,
    /// Changes membership, groups and snapshots.
    Admin,
    /// Reads and writes data.
    Client,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Peer, Role::Admin, Role::Client];

    /// The role's name (`peer`, `admin`, `client`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Admin => "admin",
            Role::Client => "client",
        }
    }

    /// The Organization value that grants the role ([`drakkar_client::roles`]).
    pub fn organization(self) -> &'static str {
        match self {
            Role::Peer => roles::PEER,
            Role::Admin => roles::ADMIN,
            Role::Client => roles::CLIENT,
        }
    }

    fn from_organization(o: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.organization() == o)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of roles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// No role.
    pub const NONE: Roles = Roles(0);

    /// The set holding `roles`.
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    /// Whether the set holds `role`.
    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// The roles in the set, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.has(*r))
    }

    /// The roles of a DER certificate: its subject's `drakkar:` Organization values. A certificate that
    /// does not parse has none (the handshake already verified it against the CA).
    pub fn of_certificate(der: &[u8]) -> Roles {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => Roles::of_subject(cert.subject()),
            Err(_) => Roles::NONE,
        }
    }

    fn of_subject(subject: &x509_parser::x509::X509Name<'_>) -> Roles {
        let orgs = subject.iter_organization().filter_map(|a| a.as_str().ok());
        Roles::of(&orgs.filter_map(Role::from_organization).collect::<Vec<_>>())
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            return f.write_str("no role");
        }
        let names: Vec<&str> = self.iter().map(Role::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

/// Who called: what the connection's certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A certificate verified against the CA, with its roles and subject (for messages).
    Certified {
        /// Its roles.
        roles: Roles,
        /// The subject, as `CN=..., O=...`.
        subject: String,
    },
    /// A connection without a certificate.
    Anonymous,
    /// A plaintext connection (`--insecure`): nothing is known, nothing is checked.
    Plaintext,
}

impl Caller {
    /// The caller of a connection that presented `certs` (end-entity first) over TLS, or `None` certs
    /// over plaintext.
    pub fn of_connection(tls: bool, certs: Option<&[CertificateDer<'static>]>) -> Caller {
        match (tls, certs.and_then(|c| c.first())) {
            (false, _) => Caller::Plaintext,
            (true, None) => Caller::Anonymous,
            (true, Some(end)) => match x509_parser::parse_x509_certificate(end) {
                Ok((_, cert)) => Caller::Certified {
                    roles: Roles::of_subject(cert.subject()),
                    subject: cert.subject().to_string(),
                },
                Err(_) => Caller::Certified { roles: Roles::NONE, subject: "an unreadable subject".into() },
            },
        }
    }
}

/// What an RPC requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The peer role.
    Peer,
    /// The admin role.
    Admin,
    /// The client or the admin role.
    Data,
    /// Any authenticated caller (any certificate of the CA, or an allowed anonymous client).
    Authenticated,
}

impl Need {
    /// What the RPC at `path` (`/package.Service/Method`) requires.
    pub fn of_path(path: &str) -> Need {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        match service {
            "drakkar.v1.Raft" => Need::Peer,
            "drakkar.v1.Admin" => match method {
                "Status" | "NodeInfo" | "GetMembership" => Need::Authenticated,
                _ => Need::Admin,
            },
            "drakkar.v1.Kv" | "drakkar.v1.StateMachine" | "drakkar.v1.Session" => Need::Data,
            _ => Need::Authenticated,
        }
    }

    /// The roles that satisfy it, for messages.
    fn describe(self) -> &'static str {
        match self {
            Need::Peer => "the peer role",
            Need::Admin => "the admin role",
            Need::Data => "the client or admin role",
            Need::Authenticated => "a client certificate",
        }
    }

    fn index(self) -> usize {
        match self {
            Need::Peer => 0,
            Need::Admin => 1,
            Need::Data => 2,
            Need::Authenticated => 3,
        }
    }
}

/// The node's authorization policy and its refusal counters.
#[derive(Debug)]
pub struct Authz {
    /// Whether callers without a certificate are let in (as clients).
    anonymous: bool,
    /// Refusals by [`Need`].
    denied: [AtomicU64; 4],
}

impl Authz {
    /// A policy; `anonymous`: connections without a certificate act with the client role.
    pub fn new(anonymous: bool) -> Authz {
        Authz { anonymous, denied: Default::default() }
    }

    /// Whether `caller` may call `path`; `forwarded`: the request carries `drakkar-forwarded`. The error is
    /// the PERMISSION_DENIED (or UNAUTHENTICATED) status to answer, naming the role needed.
    pub fn check(&self, caller: &Caller, path: &str, forwarded: bool) -> Result<(), Status> {
        let need = Need::of_path(path);
        let roles = match caller {
            Caller::Plaintext => return Ok(()),
            Caller::Anonymous if self.anonymous => Roles::of(&[Role::Client]),
            Caller::Anonymous => {
                self.denied[need.index()].fetch_add(1, Ordering::Relaxed);
                return Err(Status::unauthenticated(format!(
                    "{path} needs {}: this node does not accept callers without a certificate",
                    need.describe()
                )));
            }
            Caller::Certified { roles, .. } => *roles,
        };
        let peer_forward = forwarded && roles.has(Role::Peer);
        let ok = match need {
            Need::Peer => roles.has(Role::Peer),
            Need::Admin => roles.has(Role::Admin) || peer_forward,
            Need::Data => roles.has(Role::Client) || roles.has(Role::Admin) || peer_forward,
            Need::Authenticated => true,
        };
        if ok {
            return Ok(());
        }
        self.denied[need.index()].fetch_add(1, Ordering::Relaxed);
        let who = match caller {
            Caller::Certified { subject, .. } => format!("the caller's certificate ({subject}) has {roles}"),
            _ => "an anonymous caller has the client role only".into(),
        };
        Err(Status::permission_denied(format!(
            "{path} needs {} (O={} in the certificate's subject); {who}",
            need.describe(),
            match need {
                Need::Peer => Role::Peer.organization(),
                Need::Admin => Role::Admin.organization(),
                _ => Role::Client.organization(),
            }
        )))
    }

    /// The refusal counters in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut s = String::from(
            "# HELP drakkar_rpc_denied_total RPCs refused because the caller lacks the role they need.\n\
             # TYPE drakkar_rpc_denied_total counter\n",
        );
        for (need, name) in [
            (Need::Peer, "peer"),
            (Need::Admin, "admin"),
            (Need::Data, "client"),
            (Need::Authenticated, "authenticated"),
        ] {
            let n = self.denied[need.index()].load(Ordering::Relaxed);
            s.push_str(&format!("drakkar_rpc_denied_total{{needed=\"{name}\"}} {n}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certified(roles: &[Role]) -> Caller {
        Caller::Certified { roles: Roles::of(roles), subject: "CN=test".into() }
    }

    #[test]
    fn each_rpc_needs_its_role() {
        let authz = Authz::new(false);
        let client = certified(&[Role::Client]);
        let admin = certified(&[Role::Admin]);
        let peer = certified(&[Role::Peer]);
        let none = certified(&[]);
        let cases: &[(&str, &Caller, bool, bool)] = &[
            ("/drakkar.v1.Admin/RemoveReplica", &client, false, false),
            ("/drakkar.v1.Admin/StopGroup", &client, false, false),
            ("/drakkar.v1.Admin/ImportSnapshot", &client, false, false),
            ("/drakkar.v1.Admin/ExportSnapshot", &client, false, false),
            ("/drakkar.v1.Raft/SendMessages", &client, false, false),
            ("/drakkar.v1.Raft/SendMessages", &admin, false, false),
            ("/drakkar.v1.Raft/SendSnapshot", &peer, false, true),
            ("/drakkar.v1.Admin/RemoveReplica", &admin, false, true),
            ("/drakkar.v1.Admin/RemoveReplica", &peer, false, false),
            ("/drakkar.v1.Admin/RemoveReplica", &peer, true, true),
            ("/drakkar.v1.Admin/Status", &client, false, true),
            ("/drakkar.v1.Admin/GetMembership", &none, false, true),
            ("/drakkar.v1.Kv/Put", &client, false, true),
            ("/drakkar.v1.Kv/Put", &admin, false, true),
            ("/drakkar.v1.Kv/Put", &none, false, false),
            ("/drakkar.v1.Kv/Put", &peer, false, false),
            ("/drakkar.v1.Kv/Put", &peer, true, true),
            ("/drakkar.v1.Session/OpenSession", &client, false, true),
            ("/drakkar.v1.StateMachine/Propose", &none, true, false),
            ("/grpc.health.v1.Health/Check", &none, false, true),
            ("/drakkar.v1.Kv/Put", &Caller::Plaintext, false, true),
            ("/drakkar.v1.Admin/StopGroup", &Caller::Anonymous, false, false),
        ];
        for (path, caller, forwarded, allowed) in cases {
            let r = authz.check(caller, path, *forwarded);
            assert_eq!(r.is_ok(), *allowed, "{path} by {caller:?} (forwarded {forwarded}): {r:?}");
            if let Err(s) = r
                && !matches!(caller, Caller::Anonymous)
            {
                assert_eq!(s.code(), tonic::Code::PermissionDenied);
                assert!(s.message().contains("role"), "{}", s.message());
            }
        }
        let m = authz.metrics_text();
        assert!(m.contains("drakkar_rpc_denied_total{needed=\"admin\"} 6"), "{m}");
        assert!(m.contains("drakkar_rpc_denied_total{needed=\"peer\"} 2"), "{m}");
    }

    #[test]
    fn anonymous_callers_are_clients_only_when_allowed() {
        let refused = Authz::new(false).check(&Caller::Anonymous, "/drakkar.v1.Kv/Get", false);
        assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
        let open = Authz::new(true);
        assert!(open.check(&Caller::Anonymous, "/drakkar.v1.Kv/Get", false).is_ok());
        assert!(open.check(&Caller::Anonymous, "/drakkar.v1.Admin/Status", false).is_ok());
        let denied = open.check(&Caller::Anonymous, "/drakkar.v1.Admin/AddReplica", false).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("admin role"), "{}", denied.message());
        assert!(open.check(&Caller::Anonymous, "/drakkar.v1.Raft/SendMessages", true).is_err());
    }

    #[test]
    fn roles_come_from_the_subject_organization() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "ops");
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "drakkar:admin");
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(Roles::of_certificate(cert.der()), Roles::of(&[Role::Admin]));
        let caller = Caller::of_connection(true, Some(&[cert.der().clone()]));
        let Caller::Certified { roles, subject } = caller else { panic!("{caller:?}") };
        assert!(roles.has(Role::Admin) && !roles.has(Role::Client));
        assert!(subject.contains("CN=ops"), "{subject}");
        // Other organizations grant nothing; garbage parses to no role.
        let mut q = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        q.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
        assert_eq!(Roles::of_certificate(q.self_signed(&key).unwrap().der()), Roles::NONE);
        assert_eq!(Roles::of_certificate(b"not a certificate"), Roles::NONE);
        assert_eq!(Caller::of_connection(true, None), Caller::Anonymous);
        assert_eq!(Caller::of_connection(false, None), Caller::Plaintext);
    }
}
