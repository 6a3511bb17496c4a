//! One host-name resolution for every caller: the same dialled names, from
//! the same namespaces, reach the same service through the SDK's client
//! stack (local mode and the model decoded from meshd's xDS),
//! `meshctl x route`, and the short-name listeners and virtual-host domains
//! meshd sends a stock proxyless gRPC client.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failures

use std::process::Command;
use std::sync::{Arc, Mutex};

use mesh_core::compile::Compiler;
use mesh_core::config::MeshConfig;
use mesh_core::host::split_host_port;
use mesh_core::model::{Client, Model};
use mesh_tower::client::{self, ClientOptions};
use mesh_tower::{body, Upstream};
use mesh_xds::decode::{decode, decode_listener};
use mesh_xds::encode::{encode, EncodeOptions, Resources};
use serde_json::Value;
use tower::ServiceExt;

/// Services `reviews` and `ratings` in `bookinfo`, `reviews` in `default`.
fn config() -> String {
    [("reviews", "bookinfo"), ("ratings", "bookinfo"), ("reviews", "default")]
        .map(|(name, ns)| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: {PORT}}}]\n"
            )
        })
        .join("---\n")
}

const PORT: u16 = 9080;
const BOOKINFO: &str = "reviews.bookinfo.svc.cluster.local";
const DEFAULT: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.bookinfo.svc.cluster.local";

/// (client namespace, dialled name, the service it names).
const CASES: &[(&str, &str, Option<&str>)] = &[
    ("bookinfo", "reviews", Some(BOOKINFO)),
    ("bookinfo", "reviews.bookinfo", Some(BOOKINFO)),
    ("bookinfo", "reviews.bookinfo.svc", Some(BOOKINFO)),
    ("bookinfo", BOOKINFO, Some(BOOKINFO)),
    ("bookinfo", "reviews.default", Some(DEFAULT)),
    ("bookinfo", "ratings", Some(RATINGS)),
    // From another namespace: the bare name is that namespace's service,
    // `name.ns` and `name.ns.svc` are the named namespace's.
    ("default", "reviews", Some(DEFAULT)),
    ("default", "reviews.bookinfo", Some(BOOKINFO)),
    ("default", "reviews.bookinfo.svc", Some(BOOKINFO)),
    ("default", BOOKINFO, Some(BOOKINFO)),
    ("default", "ratings.bookinfo", Some(RATINGS)),
    ("default", "ratings", None),
    ("default", "reviews.bookinfo.svc.cluster", None),
];

fn model(dir: &std::path::Path, ns: &str) -> Model {
    let loaded = mesh_core::config::load_paths(&[dir]).unwrap();
    let resources = loaded.into_result().unwrap();
    Compiler::new(resources, MeshConfig::default()).compile(&Client::new(ns, Default::default()))
}

/// The host the SDK's client stack sends `http://name:PORT/` to.
async fn sdk(model: Model, name: &str) -> Option<String> {
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(model));
    let seen: Arc<Mutex<Option<Upstream>>> = Arc::default();
    let record = Arc::clone(&seen);
    let inner = tower::service_fn(move |req: http::Request<body::MeshBody>| {
        *record.lock().unwrap() = req.extensions().get::<Upstream>().cloned();
        async { Ok::<_, mesh_tower::BoxError>(http::Response::new(body::empty())) }
    });
    let stack = client::layer(rx, ClientOptions::default()).boxed(inner);
    let req = http::Request::get(format!("http://{name}:{PORT}/"))
        .body(body::empty())
        .unwrap();
    stack.oneshot(req).await.unwrap();
    let up = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the stack reached the endpoint stage");
    (!up.is_passthrough()).then(|| up.host.to_string())
}

/// The host `meshctl x route` routes `name:PORT` to, when it names a
/// service of the model.
fn meshctl(dir: &std::path::Path, ns: &str, name: &str, model: &Model) -> Option<String> {
    let port = PORT.to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["x", "route", "--config"])
        .arg(dir)
        .args(["--host", name, "--port", &port, "--source-namespace", ns])
        .output()
        .expect("meshctl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let host = v["destinations"][0]["host"].as_str().unwrap().to_string();
    model.outbound_for(&host, PORT).map(|_| host)
}

/// The host of the route config meshd's listener `name:PORT` names, after
/// checking its virtual host answers to that authority.
fn listener(res: &Resources, name: &str) -> Option<String> {
    let name = format!("{name}:{PORT}");
    let l = res.listeners.iter().find(|l| l.name == name)?;
    let rds = decode_listener(l).unwrap().route_config_name;
    let rc = res.routes.iter().find(|r| r.name == rds).unwrap();
    let vh = &rc.virtual_hosts[0];
    assert!(vh.domains.contains(&name), "{name} not in {:?}", vh.domains);
    split_host_port(&vh.name).map(|(h, _)| h.to_string())
}

#[tokio::test]
async fn sdk_meshctl_and_listeners_resolve_names_alike() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), config()).unwrap();
    for &(ns, name, want) in CASES {
        let local = model(dir.path(), ns);
        let res = encode(&local, &EncodeOptions::default());
        let mut decoded = local.clone();
        decode(&res).unwrap().apply_to(&mut decoded);

        let want = want.map(str::to_string);
        let case = format!("{name} from namespace {ns}");
        assert_eq!(sdk(local.clone(), name).await, want, "SDK (local): {case}");
        assert_eq!(sdk(decoded, name).await, want, "SDK (xDS): {case}");
        assert_eq!(
            meshctl(dir.path(), ns, name, &local),
            want,
            "meshctl x route: {case}"
        );
        assert_eq!(listener(&res, name), want, "meshd's listeners: {case}");
        // Host names are case-insensitive.
        let upper = name.to_ascii_uppercase();
        assert_eq!(
            sdk(local.clone(), &upper).await,
            want,
            "SDK: {upper} from {ns}"
        );
        assert_eq!(
            meshctl(dir.path(), ns, &upper, &local),
            want,
            "meshctl: {upper} from {ns}"
        );
    }
}
