//! Every API route in one table. The router ([`crate::api::router`]), the role policy
//! ([`crate::auth::access`]) and forwarding to the leader (`answered_here`) are all
//! derived from it, so a route cannot exist without a policy, and a policy cannot name
//! a route that does not exist (tests below).

/// Who may call a route besides an admin, and where it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// An admin token may call it (all but joining and the agent connection).
    pub admin: bool,
    /// A viewer token may call it.
    pub viewer: bool,
    /// A node credential may call it, for its own node's objects only.
    pub node: bool,
    /// A join token may call it.
    pub join: bool,
    /// Answered by every server itself, never forwarded to the leader.
    pub here: bool,
}

/// Admins only; forwarded to the leader.
const ADMIN: Policy = Policy {
    admin: true,
    viewer: false,
    node: false,
    join: false,
    here: false,
};

/// Admins and viewers; forwarded.
const READ: Policy = Policy {
    viewer: true,
    ..ADMIN
};

/// Admins, viewers and the node it concerns; forwarded.
const READ_OWN: Policy = Policy {
    viewer: true,
    node: true,
    ..ADMIN
};

/// A node's own agent connection, answered by whichever server it reaches.
const AGENT: Policy = Policy {
    admin: false,
    node: true,
    here: true,
    ..ADMIN
};

/// Joining with a join token, answered by whichever server it reaches.
const JOIN: Policy = Policy {
    admin: false,
    join: true,
    here: true,
    ..ADMIN
};

/// What a route reaches, for tokens limited to namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Objects of one namespace, named by `?namespace=NS`: a limited token must name
    /// one of its own.
    Namespaced,
    /// The whole cluster (nodes, tokens, servers, snapshots, the audit log, the
    /// catalog, sources): refused to a limited token.
    Cluster,
    /// Nothing of anyone's (the version).
    Any,
}

/// One route: method, path as the router matches it, policy, scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'static str,
    /// `/v1/allocs/{id}`.
    pub path: &'static str,
    /// Who may call it, and where.
    pub policy: Policy,
    /// What it reaches.
    pub scope: Scope,
}

const fn r(method: &'static str, path: &'static str, policy: Policy) -> Route {
    Route {
        method,
        path,
        policy,
        scope: Scope::Cluster,
    }
}

/// A route on one namespace's objects.
const fn ns(method: &'static str, path: &'static str, policy: Policy) -> Route {
    Route {
        scope: Scope::Namespaced,
        ..r(method, path, policy)
    }
}

/// Every authenticated route (`/healthz` and the webhook `/hooks/sources/{name}` need
/// no token and are not here).
pub const ROUTES: &[Route] = &[
    Route {
        scope: Scope::Any,
        ..r("GET", "/v1/version", Policy { here: true, ..READ })
    },
    Route {
        scope: Scope::Any,
        ..r("GET", "/v1/whoami", Policy { here: true, ..READ })
    },
    ns("POST", "/v1/apply", ADMIN),
    ns("POST", "/v1/delete", ADMIN),
    ns("POST", "/v1/plan", READ),
    r("POST", "/v1/what-if", READ),
    r("POST", "/v1/experiments", ADMIN),
    r("GET", "/v1/experiments", READ),
    r("GET", "/v1/experiments/{name}", READ),
    r("POST", "/v1/experiments/{name}/abort", ADMIN),
    ns("GET", "/v1/workloads", READ),
    ns("GET", "/v1/workloads/{kind}/{name}", READ),
    ns("DELETE", "/v1/workloads/{kind}/{name}", ADMIN),
    ns("POST", "/v1/workloads/{kind}/{name}/promote", ADMIN),
    ns("POST", "/v1/workloads/{kind}/{name}/run", ADMIN),
    r("GET", "/v1/nodes", READ),
    r("GET", "/v1/nodes/{name}", READ_OWN),
    r("POST", "/v1/nodes/{name}/labels", ADMIN),
    r("POST", "/v1/nodes/{name}/{action}", ADMIN),
    ns("GET", "/v1/allocs", READ_OWN),
    ns("GET", "/v1/allocs/{id}", READ_OWN),
    ns("GET", "/v1/allocs/{id}/logs", READ_OWN),
    ns("POST", "/v1/allocs/{id}/restart", ADMIN),
    r("GET", "/v1/catalog", READ),
    r("GET", "/metrics", Policy { here: true, ..READ }),
    r("GET", "/v1/tokens", ADMIN),
    r("POST", "/v1/tokens", ADMIN),
    r("DELETE", "/v1/tokens/{id}", ADMIN),
    r(
        "GET",
        "/v1/snapshot",
        Policy {
            here: true,
            ..ADMIN
        },
    ),
    r("GET", "/v1/servers", Policy { here: true, ..READ }),
    r(
        "GET",
        "/v1/audit",
        Policy {
            here: true,
            ..ADMIN
        },
    ),
    ns("GET", "/v1/secrets/{name}/reveal", ADMIN),
    r("POST", "/v1/secrets/rotate-key", ADMIN),
    ns("GET", "/v1/events", READ),
    ns("GET", "/v1/sources", READ),
    ns("GET", "/v1/sources/{name}", READ),
    ns("POST", "/v1/sources/{name}/sync", ADMIN),
    r("GET", "/v1/agent/connect", AGENT),
    r("POST", "/v1/join", JOIN),
];

/// The route a method and matched path name.
pub fn find(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

/// Whether a request path (as sent, not as matched) is answered by every server
/// itself: only routes without parameters are, so the path is compared whole.
pub fn answered_here(path: &str) -> bool {
    ROUTES.iter().any(|r| r.policy.here && r.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_once_and_every_here_route_has_no_parameters() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    (a.method, a.path) != (b.method, b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
            }
            if a.policy.here {
                assert!(
                    !a.path.contains('{'),
                    "{}: answered here by exact path",
                    a.path
                );
            }
            assert!(
                a.policy.admin || a.policy.node || a.policy.join,
                "{} {}: nobody may call it",
                a.method,
                a.path
            );
        }
        assert!(answered_here("/v1/version"));
        assert!(!answered_here("/v1/apply"));
        assert!(!answered_here("/v1/allocs/x"));
    }
}
