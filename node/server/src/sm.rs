//! The StateMachine (raw propose/read) and Session services.

use std::sync::Arc;

use drakkar_client::pb::{self, session_client::SessionClient, state_machine_client::StateMachineClient};
use tonic::{Request, Response, Status};

use super::ServerState;
use super::status::{invalid, to_status};
use drakkar::Session;

/// The StateMachine service.
pub(super) struct SmService(pub(super) Arc<ServerState>);

/// The Session service.
pub(super) struct SessionService(pub(super) Arc<ServerState>);

#[tonic::async_trait]
impl pb::state_machine_server::StateMachine for SmService {
    async fn propose(
        &self,
        req: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, false, StateMachineClient, propose);
        if r.command.is_empty() {
            return Err(invalid("an empty command"));
        }
        let res = s.propose(g, r.command, r.session, call.timeout).await?;
        Ok(Response::new(pb::ProposeResponse { value: res.value, data: res.data }))
    }

    async fn read(&self, req: Request<pb::ReadRequest>) -> Result<Response<pb::ReadResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, false, StateMachineClient, read);
        let data = s.query(g, r.query, r.consistency, call.timeout).await?;
        Ok(Response::new(pb::ReadResponse { data }))
    }
}

#[tonic::async_trait]
impl pb::session_server::Session for SessionService {
    async fn open_session(
        &self,
        req: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, false, SessionClient, open_session);
        let id = (r.client_id != 0).then_some(r.client_id);
        let session = s.host.open_session(g, id, call.timeout).await.map_err(|e| to_status(e, &s.host, g))?;
        Ok(Response::new(pb::OpenSessionResponse { client_id: session.client_id() }))
    }

    async fn close_session(
        &self,
        req: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, false, SessionClient, close_session);
        let session = Session::resume(g, r.client_id, 0, 0);
        s.host.close_session(session, call.timeout).await.map_err(|e| to_status(e, &s.host, g))?;
        Ok(Response::new(pb::CloseSessionResponse {}))
    }

    async fn propose_in_session(
        &self,
        req: Request<pb::ProposeInSessionRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, false, SessionClient, propose_in_session);
        let Some(session) = r.session else { return Err(invalid("a session is required")) };
        if r.command.is_empty() {
            return Err(invalid("an empty command"));
        }
        let res = s.propose(g, r.command, Some(session), call.timeout).await?;
        Ok(Response::new(pb::ProposeResponse { value: res.value, data: res.data }))
    }
}
