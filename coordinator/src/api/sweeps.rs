//! `SweepService`: create, inspect and control sweeps (`crate::services::sweeps`); the
//! coordinators' upkeep does the feeding.

use std::sync::Arc;

use stackhive_proto::v1 as pb;
use stackhive_proto::v1::sweep_service_server::SweepService;
use tonic::{Request, Response, Status};

use crate::domain::model::JobFilter;
use crate::services::sweeps;
use crate::store::Store;

pub struct SweepApi {
    store: Arc<dyn Store>,
}

impl SweepApi {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    async fn with_counts(
        &self,
        s: &crate::domain::model::SweepRecord,
    ) -> Result<pb::Sweep, Status> {
        let counts = self
            .store
            .count_states(&JobFilter {
                experiment: Some(s.experiment.clone()),
                kind: Some("stack".into()),
                ..Default::default()
            })
            .await?;
        Ok(sweeps::to_pb(s, Some(counts)))
    }
}

#[tonic::async_trait]
impl SweepService for SweepApi {
    async fn create_sweep(
        &self,
        req: Request<pb::CreateSweepRequest>,
    ) -> Result<Response<pb::Sweep>, Status> {
        let s = sweeps::create(&self.store, req.into_inner()).await?;
        tracing::info!(sweep = s.id, experiment = %s.experiment, n = s.n, "sweep created");
        Ok(Response::new(self.with_counts(&s).await?))
    }

    async fn get_sweep(
        &self,
        req: Request<pb::GetSweepRequest>,
    ) -> Result<Response<pb::Sweep>, Status> {
        let s = self.store.get_sweep(req.into_inner().id).await?;
        Ok(Response::new(self.with_counts(&s).await?))
    }

    async fn list_sweeps(
        &self,
        _req: Request<pb::ListSweepsRequest>,
    ) -> Result<Response<pb::ListSweepsResponse>, Status> {
        let all = self.store.list_sweeps(None).await?;
        Ok(Response::new(pb::ListSweepsResponse {
            sweeps: all.iter().map(|s| sweeps::to_pb(s, None)).collect(),
        }))
    }

    async fn control_sweep(
        &self,
        req: Request<pb::ControlSweepRequest>,
    ) -> Result<Response<pb::Sweep>, Status> {
        let r = req.into_inner();
        let s = sweeps::control(&self.store, r.id, &r.action, r.extend).await?;
        tracing::info!(sweep = s.id, action = %r.action, state = %s.state, "sweep controlled");
        Ok(Response::new(self.with_counts(&s).await?))
    }
}
