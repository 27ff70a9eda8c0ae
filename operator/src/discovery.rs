//! What the API server offers, checked once at start ([`Capabilities`]): builders leave out what an
//! older server cannot take, and the reconciler says so with an Event instead of failing.

use kube::Client;

use crate::build::Capabilities;

/// Asks the server which optional APIs it serves. An API whose discovery fails for another reason than
/// "not found" is assumed present (the apply would then fail loudly and be retried).
pub async fn discover(client: &Client) -> Capabilities {
    let pdb_v1 = match client.list_api_group_resources("policy/v1").await {
        Ok(list) => list.resources.iter().any(|r| r.name == "poddisruptionbudgets"),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not discover policy/v1; assuming it is served");
            true
        }
    };
    Capabilities { pdb_v1 }
}
