//! The validating admission webhook (istiod's 15017 `/validate`): the API
//! server asks before it stores an Istio object, and meshd answers with the
//! same loader and validation a file goes through, so `kubectl apply` of
//! config meshd cannot serve is refused with the field and the fix, as
//! `meshctl analyze` would say it.
//!
//! Analyzer findings about the object in the context of what is serving
//! (a subset no DestinationRule defines, say) are returned as warnings,
//! not refusals: objects arrive one `kubectl apply` at a time, often in an
//! order where the other half is not there yet. meshd skips any object
//! the analyzer still finds in error once both halves are in.
//!
//! The same port serves the mutating webhook, `POST /inject` (pods joining
//! the mesh, [`super::inject`]).
//!
//! Not here: TLS and the accept loop (`mesh_ca::server`), which the
//! webhook port shares with the TLS xDS port.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use mesh_core::analyze::{analyze, Severity};
use mesh_core::config::load::LoadResult;
use mesh_core::config::{Kind, Resource};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::controller::Controller;

use super::convert;
use super::inject::{self, InjectConfig, INJECT_PATH};
use super::store::Entry;

/// The path the API server posts reviews to.
pub const VALIDATE_PATH: &str = "/validate";

/// Largest review accepted: the API server's own object limit is 3 MiB.
const MAX_BODY: usize = 4 << 20;

/// Answers one AdmissionReview (the request body) with one (the response
/// body). Kinds meshd does not read, and deletes, are allowed.
pub fn review(body: &[u8], ctl: Option<&Controller>) -> Vec<u8> {
    let response = match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
        Err(e) => AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")),
        Ok(review) => match TryInto::<AdmissionRequest<DynamicObject>>::try_into(review) {
            Err(_) => AdmissionResponse::invalid("an AdmissionReview without a request"),
            Ok(req) => decide(&req, ctl),
        },
    };
    serde_json::to_vec(&response.into_review()).unwrap_or_default()
}

fn decide(req: &AdmissionRequest<DynamicObject>, ctl: Option<&Controller>) -> AdmissionResponse {
    let allow = AdmissionResponse::from(req);
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return allow;
    }
    let api_version = if req.kind.group.is_empty() {
        req.kind.version.clone()
    } else {
        format!("{}/{}", req.kind.group, req.kind.version)
    };
    let Ok((kind, _)) = Kind::resolve(&api_version, &req.kind.kind) else {
        // Not ours to judge (the webhook configuration should not send it).
        return allow;
    };
    let Some(obj) = req.object.clone() else {
        return allow.deny("the review carries no object to validate");
    };
    let mut obj = obj;
    // The API server fills the namespace from the URL, not the body.
    if obj.metadata.namespace.is_none() {
        obj.metadata.namespace = req.namespace.clone();
    }
    let ar = kube::discovery::ApiResource {
        group: req.kind.group.clone(),
        version: req.kind.version.clone(),
        api_version,
        kind: req.kind.kind.clone(),
        plural: req.resource.resource.clone(),
    };
    match convert::convert(kind, &ar, obj) {
        Entry::Invalid(why) => allow.deny(format!(
            "meshd refused {}: {}",
            req.kind.kind,
            why.join("; ")
        )),
        Entry::Valid(r) => {
            let warnings = ctl.map(|c| findings_for(c, &r)).unwrap_or_default();
            let mut resp = allow;
            if !warnings.is_empty() {
                resp.warnings = Some(warnings);
            }
            resp
        }
    }
}

/// What the analyzer says about `r` next to the config being served.
fn findings_for(ctl: &Controller, r: &Resource) -> Vec<String> {
    let Some(g) = ctl.generation() else {
        return Vec::new();
    };
    let key = r.key();
    let mut resources: Vec<Resource> = g
        .resources
        .iter()
        .filter(|x| x.key() != key)
        .cloned()
        .collect();
    resources.push(r.clone());
    let load = LoadResult {
        resources,
        ..LoadResult::default()
    };
    analyze(&load, &g.mesh)
        .into_iter()
        .filter(|f| f.resource == key && f.severity != Severity::Info)
        .map(|f| format!("[{}] {}", f.code, f.message))
        .collect()
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    ctl: Controller,
    injector: Arc<InjectConfig>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let inject = path == INJECT_PATH;
    if req.method() != Method::POST || !(inject || path == VALIDATE_PATH) {
        return respond(
            StatusCode::NOT_FOUND,
            format!("{{\"error\":\"POST AdmissionReviews to {VALIDATE_PATH} or {INJECT_PATH}\"}}")
                .into_bytes(),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{{\"error\":\"reading the review: {e}\"}}").into_bytes(),
            )
        }
    };
    // The analyzer is CPU work.
    let out = tokio::task::spawn_blocking(move || {
        if inject {
            inject::review(&body, &injector, &|ns| inject::namespace_labels(&ctl, ns))
        } else {
            review(&body, Some(&ctl))
        }
    })
    .await
    .unwrap_or_default();
    respond(StatusCode::OK, out)
}

/// Serves the webhooks on `listener` over `tls` until `stop` turns true:
/// validation with `ctl`'s config, injection with `injector`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctl: Controller,
    injector: InjectConfig,
    mut stop: watch::Receiver<bool>,
) {
    let injector = Arc::new(injector);
    let mut incoming = mesh_ca::server::tls_incoming(listener, tls, "admission webhook");
    loop {
        let stream = tokio::select! {
            s = incoming.next() => s,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(Ok(stream)) = stream else {
            continue;
        };
        let ctl = ctl.clone();
        let injector = injector.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ctl = ctl.clone();
                let injector = injector.clone();
                async move { Ok::<_, Infallible>(handle(req, ctl, injector).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn review_of(spec: serde_json::Value, op: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7c1d",
                "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
                "namespace": "bookinfo",
                "operation": op,
                "userInfo": {"username": "alice"},
                "object": {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "VirtualService",
                    "metadata": {"name": "reviews"},
                    "spec": spec
                }
            }
        })
    }

    fn answer(v: serde_json::Value) -> serde_json::Value {
        let out = review(&serde_json::to_vec(&v).unwrap(), None);
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()["response"].clone()
    }

    #[test]
    fn invalid_config_is_refused_with_field_and_fix() {
        let r = answer(review_of(
            serde_json::json!({"hosts": ["reviews"], "http": [{"timeout": "soon", "route": [{"destination": {"host": "reviews"}}]}]}),
            "CREATE",
        ));
        assert_eq!(r["uid"], "7c1d");
        assert_eq!(r["allowed"], false);
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("VirtualService/bookinfo/reviews") && msg.contains("spec.http[0].timeout"),
            "{msg}"
        );
    }

    #[test]
    fn valid_config_and_deletes_are_allowed() {
        let ok = serde_json::json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]});
        assert_eq!(answer(review_of(ok, "UPDATE"))["allowed"], true);
        let bad = serde_json::json!({"hosts": 5});
        assert_eq!(answer(review_of(bad, "DELETE"))["allowed"], true);
    }

    #[test]
    fn garbage_is_refused() {
        let out = review(b"{", None);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["response"]["allowed"], false);
    }
}
