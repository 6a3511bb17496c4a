//! What `meshctl x authz` prints for one request: the engine's decision
//! (what an SDK server enforces) and what a stock gRPC server fed by meshd
//! decides with the RBAC filters meshd sends it, with every rule that
//! lowering changed and why. The interop tests compare real stock servers
//! against this.

use mesh_core::authz::{
    self, normalize, Decision, Note, PolicySet, Protocol, Request, StockServer, Verdict,
};
use mesh_core::compile::Compiler;
use mesh_core::config::common::Labels;
use mesh_core::rbac;
use serde::Serialize;

/// A stock gRPC server's view of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockDecision {
    /// Which kind of server (they differ in what RBAC can see).
    pub server: StockServer,
    /// ALLOW or DENY.
    pub decision: Verdict,
    /// The RBAC filter that refused the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The RBAC policy (`namespace-name-rule`) that decided, if one matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// True when the filters mean exactly what the policies mean; else
    /// `notes` says which rules a stock server evaluates differently (it
    /// then never allows more than the engine).
    pub exact: bool,
    /// Rules lowering dropped, widened or did not send, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The engine's decision with the stock server's beside it.
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    /// What the engine (an SDK server, `meshctl`) decides.
    #[serde(flatten)]
    pub engine: Decision,
    /// What a stock gRPC server fed by meshd decides.
    pub stock_grpc_server: StockDecision,
}

/// The compiled policies that apply to a workload.
pub fn policy_set(compiler: &Compiler, namespace: &str, labels: Labels) -> PolicySet {
    let workload = authz::Workload {
        namespace: namespace.to_string(),
        labels,
        targets: Vec::new(),
    };
    let settings = compiler.settings();
    PolicySet::for_workload(
        compiler.resources(),
        &settings.root_namespace,
        &workload,
        settings.path_normalization,
    )
}

/// Explains the decision on `req` both ways, for a stock server of kind
/// `server`.
pub fn explain(set: &PolicySet, req: &Request, server: StockServer) -> Explained {
    let engine = set.evaluate(req);
    let lowered = set.lower_for(req.protocol, server);
    let notes: Vec<String> = lowered.notes.iter().map(Note::to_string).collect();
    let stock = match req.protocol {
        Protocol::Http => normalize(&req.path, set.normalization()).ok().map(Some),
        Protocol::Tcp => Some(None),
    }
    .map(|path| {
        let peer = authz::lower::peer_uri(req);
        let attrs = authz::lower::attributes(req, path.as_deref(), peer.as_deref());
        let out = rbac::evaluate(&lowered.filters, &attrs);
        StockDecision {
            server,
            decision: if out.allowed {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            filter: out.filter.map(str::to_string),
            policy: out.policy.map(str::to_string),
            exact: lowered.is_exact(),
            notes: notes.clone(),
        }
    })
    // A path the HTTP layer rejects never reaches RBAC.
    .unwrap_or(StockDecision {
        server,
        decision: Verdict::Deny,
        filter: None,
        policy: None,
        exact: lowered.is_exact(),
        notes,
    });
    Explained {
        engine,
        stock_grpc_server: stock,
    }
}
