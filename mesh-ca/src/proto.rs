//! Generated code for Istio's CA API (`proto/istio/v1/auth/ca.proto`):
//! prost messages and the tonic client and server of
//! `istio.v1.auth.IstioCertificateService`.

/// The `istio.v1.auth` protobuf package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod istio_v1_auth {
    tonic::include_proto!("istio.v1.auth");
}

pub use istio_v1_auth::istio_certificate_service_client::IstioCertificateServiceClient;
pub use istio_v1_auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
pub use istio_v1_auth::{IstioCertificateRequest, IstioCertificateResponse, Roots};

/// The full gRPC method path, as Istio clients call it.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";
