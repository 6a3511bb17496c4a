//! Stock grpcio and grpc-js-xds servers, over plaintext and mesh mTLS,
//! decide every call of the authorization corpus as `meshctl x authz`
//! says (see `mesh_interop::authz_corpus`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_core::authz::Verdict;
use mesh_interop::authz_corpus;
use mesh_interop::{Lang, Tool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_servers_decide_as_meshctl_x_authz() {
    let py = Tool::find(Lang::Python).unwrap();
    let node = Tool::find(Lang::Node).unwrap();
    let outcomes = authz_corpus::run(&py, &node).await.unwrap();
    assert!(outcomes.len() >= 30, "{} calls", outcomes.len());
    let wrong: Vec<_> = outcomes.iter().filter(|o| !o.agrees()).collect();
    assert!(
        wrong.is_empty(),
        "calls that disagree with meshctl x authz:\n{wrong:#?}"
    );
    // Where the lowering is exact (C-core: the one dropped rule needs a
    // JWT no call carries), stock servers decide as the engine; where not
    // (grpc-js-xds cannot match IP blocks), they never allow more.
    let open: Vec<_> = outcomes
        .iter()
        .filter(|o| o.expected == Verdict::Allow && o.engine == Verdict::Deny)
        .collect();
    assert!(
        open.is_empty(),
        "stock servers allowed what the engine denies: {open:#?}"
    );
    let differ: Vec<_> = outcomes
        .iter()
        .filter(|o| o.what.starts_with("Python") && o.engine != o.expected)
        .collect();
    assert!(differ.is_empty(), "{differ:#?}");
    let allowed = outcomes
        .iter()
        .filter(|o| o.expected == Verdict::Allow)
        .count();
    let denied = outcomes.len() - allowed;
    assert!(
        allowed >= 10 && denied >= 10,
        "{allowed} allowed, {denied} denied"
    );
}
