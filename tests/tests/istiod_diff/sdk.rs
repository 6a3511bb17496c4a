//! Our SDK's xDS source pointed at istiod and at meshd with the same
//! workload identity: the ADS client `Mesh::xds` runs
//! ([`mesh_xds::client::XdsClient`], with the node `Mesh::xds` sends:
//! namespace, labels, service account, `GENERATOR: grpc` and the SDK
//! marker), each decoding its server's resources into the model the SDK's
//! layers execute. The two models are compared where they decide
//! something: which services exist, and for a corpus of requests per
//! service the route each one takes (destinations and their shares,
//! retries, timeout, fault, mirrors, rewrites, header operations); and
//! per cluster its endpoints and traffic policy.
//!
//! `mesh-interop` does not depend on `mesh-tower`, so requests are
//! decided by the model's own route tables (the functions the SDK's route
//! layer calls), not sent through `MeshClient`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::config::common::Labels;
use mesh_core::model::{Cluster, Model};
use mesh_core::route::{Action, RequestInfo, Route};
use mesh_interop::control::yaml_dir;
use mesh_interop::istiod::Istiod;
use mesh_interop::{ControlPlane, HarnessError};
use mesh_xds::client::{XdsClient, XdsClientConfig};
use mesh_xds::node::NodeInfo;
use serde_json::{json, Value};

use super::diff::Difference;

const AREA: &str = "sdk";

/// The node `Mesh::xds(..).namespace("interop").labels([("app",
/// "interop-client")]).service_account("interop-client")` sends (see
/// `mesh_tower::source::xds::node_info`).
fn node() -> NodeInfo {
    let mut labels = Labels::new();
    labels.insert("app".into(), "interop-client".into());
    NodeInfo {
        namespace: Some("interop".into()),
        labels,
        service_account: Some("interop-client".into()),
        ..NodeInfo::default()
    }
}

async fn model_from(
    addr: std::net::SocketAddr,
    who: &str,
) -> Result<(XdsClient, Arc<Model>), HarnessError> {
    let cfg = XdsClientConfig::new([format!("http://{addr}")], node());
    let client = XdsClient::start(cfg).map_err(|e| HarnessError::Script {
        script: format!("xDS client of {who}"),
        message: e.to_string(),
    })?;
    client
        .ready(Duration::from_secs(30))
        .await
        .map_err(|e| HarnessError::Script {
            script: format!("xDS client of {who}"),
            message: e.to_string(),
        })?;
    // Let late pushes (EDS after CDS) settle, then take the latest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let model = client.current();
    Ok((client, model))
}

/// A request of the corpus: method path and headers.
struct Req {
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

const CORPUS: &[Req] = &[
    Req {
        path: "/echo.Echo/Hello",
        headers: &[],
    },
    Req {
        path: "/echo.Echo/Forbidden",
        headers: &[],
    },
    Req {
        path: "/echo.Echo/Secret",
        headers: &[],
    },
    Req {
        path: "/other.Svc/Get",
        headers: &[],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-canary", "yes")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-canary", "no")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-user", "admin")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-user", "bob")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-user", "alice")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-fault", "abort-grpc")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-fault", "abort-http")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-fault", "half")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-fault", "delay")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-skip", "0")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-skip", "1")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-skip", "0"), ("x-redirect", "1")],
    },
    Req {
        path: "/echo.Echo/Hello",
        headers: &[("x-absent", "never"), ("x-skip", "1")],
    },
];

fn describe(r: &Req) -> String {
    let h: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("POST {} [{}]", r.path, h.join(", "))
}

/// What a route decides, without where it came from (rule names and
/// indexes are bookkeeping, and weights are compared as shares).
fn decision(route: Option<&Route>) -> BTreeMap<&'static str, Value> {
    let mut d = BTreeMap::new();
    let Some(r) = route else {
        d.insert("route", json!("none (no route matches)"));
        return d;
    };
    let action = match &r.action {
        Action::Forward(w) => {
            let total: f64 = w.destinations.iter().map(|x| f64::from(x.weight)).sum();
            let shares: Vec<Value> = w
                .destinations
                .iter()
                .map(|x| {
                    json!({
                        "host": x.host,
                        "subset": x.subset,
                        "port": x.port,
                        "share": ((f64::from(x.weight) / total) * 1000.0).round() / 1000.0,
                        "request_headers": x.request_headers,
                        "response_headers": x.response_headers,
                    })
                })
                .collect();
            json!({"forward": shares})
        }
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    };
    let forwards = matches!(r.action, Action::Forward(_));
    d.insert("action", action);
    // Retries and the route timeout only matter when the route forwards.
    // `origin` (Istio's default or the route's own) only labels the policy
    // for explanations; what is retried is the rest.
    if forwards {
        let mut retries = serde_json::to_value(&r.retries).unwrap_or(Value::Null);
        if let Some(o) = retries.as_object_mut() {
            o.remove("origin");
        }
        d.insert("retries", retries);
        d.insert(
            "timeout",
            serde_json::to_value(r.timeout).unwrap_or(Value::Null),
        );
    }
    d.insert(
        "fault",
        serde_json::to_value(&r.fault).unwrap_or(Value::Null),
    );
    d.insert(
        "mirrors",
        serde_json::to_value(&r.mirrors).unwrap_or(Value::Null),
    );
    d.insert(
        "rewrite",
        serde_json::to_value(&r.rewrite).unwrap_or(Value::Null),
    );
    d.insert(
        "request_headers",
        serde_json::to_value(&r.request_headers).unwrap_or(Value::Null),
    );
    d.insert(
        "response_headers",
        serde_json::to_value(&r.response_headers).unwrap_or(Value::Null),
    );
    d.insert("cors", serde_json::to_value(&r.cors).unwrap_or(Value::Null));
    d
}

/// A cluster as far as it decides where and how requests go.
fn cluster_view(c: &Cluster) -> BTreeMap<&'static str, Value> {
    let mut eps: Vec<Value> = c
        .endpoints
        .iter()
        .map(|e| json!({"address": format!("{}:{}", e.address, e.port), "weight": e.weight, "locality": e.locality}))
        .collect();
    eps.sort_by_key(ToString::to_string);
    let mut v = BTreeMap::new();
    v.insert("endpoints", Value::Array(eps));
    v.insert(
        "load_balancer",
        serde_json::to_value(&c.policy.load_balancer).unwrap_or(Value::Null),
    );
    v.insert(
        "connection_pool",
        serde_json::to_value(&c.policy.connection_pool).unwrap_or(Value::Null),
    );
    v.insert(
        "outlier_detection",
        serde_json::to_value(&c.policy.outlier_detection).unwrap_or(Value::Null),
    );
    v.insert(
        "tls",
        serde_json::to_value(&c.policy.tls).unwrap_or(Value::Null),
    );
    v
}

fn compare_models(i: &Model, m: &Model) -> (usize, Vec<Difference>) {
    let mut diffs = Vec::new();
    let mut compared = 0;
    let keys_i: BTreeSet<&String> = i.outbound.keys().collect();
    let keys_m: BTreeSet<&String> = m.outbound.keys().collect();
    compared += 1;
    if keys_i != keys_m {
        diffs.push(Difference {
            area: AREA,
            case: "outbound services".into(),
            request: "host:port keys of the model".into(),
            istiod: format!(
                "only here: {:?}",
                keys_i.difference(&keys_m).collect::<Vec<_>>()
            ),
            meshd: format!(
                "only here: {:?}",
                keys_m.difference(&keys_i).collect::<Vec<_>>()
            ),
        });
    }
    for key in keys_i.intersection(&keys_m) {
        let (oi, om) = (&i.outbound[*key], &m.outbound[*key]);
        for req in CORPUS {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect();
            let info = RequestInfo {
                method: "POST",
                path: req.path,
                authority: key.as_str(),
                scheme: "http",
                port: Some(oi.port),
                headers: &headers,
            };
            let (di, dm) = (
                decision(oi.routes.route(&info)),
                decision(om.routes.route(&info)),
            );
            compared += 1;
            for field in di.keys().chain(dm.keys()).collect::<BTreeSet<_>>() {
                let (a, b) = (di.get(field), dm.get(field));
                if a != b {
                    diffs.push(Difference {
                        area: AREA,
                        case: (*key).clone(),
                        request: format!("{} -> {field}", describe(req)),
                        istiod: a.map_or("-".into(), ToString::to_string),
                        meshd: b.map_or("-".into(), ToString::to_string),
                    });
                }
            }
        }
    }
    // Whether each model can carry its routes out: every cluster a route
    // forwards to, with its endpoints (a missing one fails the request
    // with no healthy upstream).
    let mut referenced = BTreeSet::new();
    for key in keys_i.intersection(&keys_m) {
        for model in [i, m] {
            let svc = &model.outbound[*key];
            for r in &svc.routes.routes {
                for x in r.destinations() {
                    let port = x.port.unwrap_or(svc.port);
                    referenced.insert(mesh_core::model::cluster_name(
                        &x.host,
                        port,
                        x.subset.as_deref(),
                    ));
                }
            }
        }
    }
    let upstream = |model: &Model, name: &str| {
        model.clusters.get(name).map_or_else(
            || {
                "missing from the model: requests routed here fail (503, no healthy upstream)"
                    .to_string()
            },
            |c| format!("present, {} endpoints", c.endpoints.len()),
        )
    };
    for name in &referenced {
        let (ui, um) = (upstream(i, name), upstream(m, name));
        compared += 1;
        if ui != um {
            diffs.push(Difference {
                area: AREA,
                case: name.clone(),
                request: "upstream cluster a route forwards to".into(),
                istiod: ui,
                meshd: um,
            });
        }
    }
    // meshd answers the SDK's wildcard CDS with every cluster the client
    // can reach; istiod builds only the clusters named. Clusters no route
    // sends to decide nothing (the ones routes use are compared above), so
    // only a cluster istiod has and meshd lacks is a difference.
    let names_i: BTreeSet<&String> = i.clusters.keys().collect();
    let names_m: BTreeSet<&String> = m.clusters.keys().collect();
    compared += 1;
    if !names_i.is_subset(&names_m) {
        diffs.push(Difference {
            area: AREA,
            case: "clusters".into(),
            request: "cluster names of the model".into(),
            istiod: format!(
                "only here: {:?}",
                names_i.difference(&names_m).collect::<Vec<_>>()
            ),
            meshd: format!(
                "only here: {:?}",
                names_m.difference(&names_i).collect::<Vec<_>>()
            ),
        });
    }
    for name in names_i.intersection(&names_m) {
        let (ci, cm) = (
            cluster_view(&i.clusters[*name]),
            cluster_view(&m.clusters[*name]),
        );
        compared += 1;
        for field in ci.keys() {
            if ci.get(field) != cm.get(field) {
                diffs.push(Difference {
                    area: AREA,
                    case: (*name).clone(),
                    request: format!("cluster {field}"),
                    istiod: ci.get(field).map_or("-".into(), ToString::to_string),
                    meshd: cm.get(field).map_or("-".into(), ToString::to_string),
                });
            }
        }
    }
    (compared, diffs)
}

/// Starts istiod and meshd on `yaml`, decodes both models for the same
/// node, and compares them.
pub async fn run(yaml: &str) -> Result<(usize, Vec<Difference>), HarnessError> {
    let dir = yaml_dir(yaml)?;
    let istiod = Istiod::start(dir.path()).await?;
    let meshd = ControlPlane::start(dir.path()).await?;
    let (ci, mi) = model_from(istiod.xds_addr(), "istiod").await?;
    let (cm, mm) = model_from(meshd.xds_addr(), "meshd").await?;
    let mut diffs = Vec::new();
    // A resource our decoder rejected from istiod is a difference in
    // itself (and explains any missing service below).
    for (who, c) in [("istiod", &ci), ("meshd", &cm)] {
        for (type_url, st) in c.status().types {
            if let Some(n) = st.last_nack {
                diffs.push(Difference {
                    area: AREA,
                    case: format!("NACK of {who}'s {type_url}"),
                    request: "decode".into(),
                    istiod: if who == "istiod" {
                        format!("{n:?}")
                    } else {
                        "-".into()
                    },
                    meshd: if who == "meshd" {
                        format!("{n:?}")
                    } else {
                        "-".into()
                    },
                });
            }
        }
    }
    for (who, c, m) in [("istiod", &ci, &mi), ("meshd", &cm, &mm)] {
        let st = c.status();
        let types: Vec<String> = st
            .types
            .iter()
            .map(|(t, s)| {
                format!(
                    "{}: {} subscribed, {} absent",
                    t.rsplit('.').next().unwrap_or(t),
                    if s.subscribed.is_empty() {
                        "wildcard".to_string()
                    } else {
                        s.subscribed.len().to_string()
                    },
                    s.does_not_exist.len()
                )
            })
            .collect();
        eprintln!(
            "sdk model from {who}: {} outbound services, {} clusters; xDS: {}",
            m.outbound.len(),
            m.clusters.len(),
            types.join("; ")
        );
    }
    let (compared, more) = compare_models(&mi, &mm);
    diffs.extend(more);
    Ok((compared, diffs))
}
