//! meshd itself: its Namespace, ServiceAccount, Deployment and Service.
//!
//! The Deployment runs `meshd --source kubernetes` listening on every
//! address (xDS 15010, xDS over TLS 15012, health and metrics 15014), ready
//! when `/ready` says the API server's kinds are all listed. The Service
//! carries istiod's port names, so clients written for istiod's Service
//! find meshd's the same way.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Namespace, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{meta, InstallOptions, NAME};

/// Plaintext xDS and CA gRPC.
pub const XDS_PORT: u16 = 15010;
/// xDS and CA gRPC over TLS.
pub const SECURE_XDS_PORT: u16 = 15012;
/// `/healthz`, `/ready`, `/metrics`, `/debug/*`.
pub const HTTP_PORT: u16 = 15014;
/// Admission webhooks (the Service's 443).
pub const WEBHOOK_PORT: u16 = 15017;

/// The arguments meshd runs with (see `meshd --help`).
pub fn meshd_args() -> Vec<String> {
    [
        "--source".to_string(),
        "kubernetes".to_string(),
        "--xds-addr".to_string(),
        format!("0.0.0.0:{XDS_PORT}"),
        "--secure-xds-addr".to_string(),
        format!("0.0.0.0:{SECURE_XDS_PORT}"),
        "--http-addr".to_string(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--webhook-addr".to_string(),
        format!("0.0.0.0:{WEBHOOK_PORT}"),
    ]
    .into()
}

/// The labels that select meshd's pods.
pub fn selector_labels() -> BTreeMap<String, String> {
    [("app".to_string(), NAME.to_string())].into()
}

/// The Namespace meshd runs in.
pub fn namespace(opts: &InstallOptions) -> Namespace {
    Namespace {
        metadata: meta(&opts.namespace, None),
        ..Namespace::default()
    }
}

/// ServiceAccount `meshd`, the identity its RBAC is bound to.
pub fn service_account(opts: &InstallOptions) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(NAME, Some(&opts.namespace)),
        ..ServiceAccount::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(number),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        value: None,
    }
}

/// Deployment `meshd`.
pub fn deployment(opts: &InstallOptions) -> Deployment {
    let mut pod_meta = meta(NAME, None);
    pod_meta.name = None;
    if let Some(labels) = pod_meta.labels.as_mut() {
        labels.extend(selector_labels());
    }
    let uid = 1337;
    let container = Container {
        name: NAME.into(),
        image: Some(opts.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(meshd_args()),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![
            port("grpc-xds", XDS_PORT),
            port("https-dns", SECURE_XDS_PORT),
            port("http-monitoring", HTTP_PORT),
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::Int(i32::from(HTTP_PORT)),
                ..HTTPGetAction::default()
            }),
            initial_delay_seconds: Some(1),
            period_seconds: Some(3),
            timeout_seconds: Some(5),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), Quantity("100m".into())),
                    ("memory".to_string(), Quantity("128Mi".into())),
                ]
                .into(),
            ),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        // The CA keeps its root in a temporary directory unless told
        // otherwise; the root filesystem is read-only.
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    Deployment {
        metadata: meta(NAME, Some(&opts.namespace)),
        spec: DeploymentSpec {
            replicas: Some(opts.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(uid),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

fn service_port(name: &str, port: u16, target: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(target))),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// Service `meshd`, with istiod's port names.
pub fn service(opts: &InstallOptions) -> Service {
    Service {
        metadata: meta(NAME, Some(&opts.namespace)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels()),
            ports: Some(vec![
                service_port("grpc-xds", XDS_PORT, XDS_PORT),
                service_port("https-dns", SECURE_XDS_PORT, SECURE_XDS_PORT),
                service_port("http-monitoring", HTTP_PORT, HTTP_PORT),
                service_port("https-webhook", 443, WEBHOOK_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
