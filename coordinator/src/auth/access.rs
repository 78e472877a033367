//! Which roles may call which RPC: one table, read by the auth layer before any handler runs
//! (proto/stackhive/v1/auth.proto describes the roles to users). Must not: let an unknown
//! method through without a valid token.

use crate::domain::model::Role;

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The standard health service: no token.
    Open,
    /// Reading jobs, workers, datasets, folds and artifacts (and reflection).
    Read,
    /// Changing the queue: submit, cancel, retry; uploading datasets.
    Submit,
    /// Deriving data from what is stored: folds, feature sets and the models a definition
    /// names. A submitter asks ahead, a worker on use (an ensemble job builds the set of the
    /// models it chose); the same definition always gives the same result.
    Derive,
    /// The worker protocol and its artifact uploads.
    Work,
    /// Token management.
    Admin,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Open => true,
            Access::Read => true,
            Access::Submit => matches!(role, Role::Submitter | Role::Admin),
            Access::Derive => role != Role::Reader,
            Access::Work => matches!(role, Role::Worker | Role::Admin),
            Access::Admin => role == Role::Admin,
        }
    }

    /// The roles that may, for messages.
    pub fn roles(self) -> &'static str {
        match self {
            Access::Open | Access::Read => "any role",
            Access::Submit => "submitter or admin",
            Access::Derive => "submitter, worker or admin",
            Access::Work => "worker or admin",
            Access::Admin => "admin",
        }
    }
}

/// The access a gRPC method path (`/package.Service/Method`) needs.
pub fn required(path: &str) -> Access {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (service, method) {
        ("grpc.health.v1.Health", _) => Access::Open,
        ("stackhive.v1.JobService", "Submit" | "Cancel" | "Retry" | "ImportPredictions") => {
            Access::Submit
        }
        ("stackhive.v1.JobService", _) => Access::Read,
        ("stackhive.v1.WorkerService", _) => Access::Work,
        ("stackhive.v1.DatasetService", "UploadDataset") => Access::Submit,
        ("stackhive.v1.DatasetService", "ComputeFolds") => Access::Derive,
        ("stackhive.v1.DatasetService", _) => Access::Read,
        ("stackhive.v1.ArtifactService", "UploadArtifact" | "DeleteArtifact") => Access::Work,
        ("stackhive.v1.ArtifactService", _) => Access::Read,
        ("stackhive.v1.TokenService", _) => Access::Admin,
        ("stackhive.v1.FeatureService", "UploadFeatureSet") => Access::Submit,
        ("stackhive.v1.FeatureService", "BuildFeatureSet" | "ResolveModels") => Access::Derive,
        ("stackhive.v1.FeatureService", _) => Access::Read,
        ("stackhive.v1.SweepService", "CreateSweep" | "ControlSweep") => Access::Submit,
        ("stackhive.v1.SweepService", _) => Access::Read,
        // Reflection, and anything unknown (answered UNIMPLEMENTED once authenticated).
        _ => Access::Read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_gets_its_calls() {
        let may = |role, path| required(path).allows(role);
        assert!(may(Role::Reader, "/stackhive.v1.JobService/ListJobs"));
        assert!(!may(Role::Reader, "/stackhive.v1.JobService/Submit"));
        assert!(may(Role::Submitter, "/stackhive.v1.JobService/Submit"));
        assert!(!may(Role::Submitter, "/stackhive.v1.WorkerService/Lease"));
        assert!(!may(Role::Worker, "/stackhive.v1.JobService/Submit"));
        assert!(may(Role::Worker, "/stackhive.v1.WorkerService/Complete"));
        assert!(may(
            Role::Worker,
            "/stackhive.v1.DatasetService/ComputeFolds"
        ));
        assert!(!may(
            Role::Reader,
            "/stackhive.v1.DatasetService/ComputeFolds"
        ));
        assert!(!may(
            Role::Worker,
            "/stackhive.v1.DatasetService/UploadDataset"
        ));
        assert!(may(
            Role::Worker,
            "/stackhive.v1.ArtifactService/UploadArtifact"
        ));
        assert!(!may(
            Role::Reader,
            "/stackhive.v1.ArtifactService/DeleteArtifact"
        ));
        assert!(!may(
            Role::Submitter,
            "/stackhive.v1.TokenService/CreateToken"
        ));
        assert!(may(Role::Admin, "/stackhive.v1.TokenService/RevokeToken"));
        // An ensemble job resolves models and builds the set of those it chose; uploading a
        // set made elsewhere stays a submitter's.
        for m in ["BuildFeatureSet", "ResolveModels"] {
            let path = format!("/stackhive.v1.FeatureService/{m}");
            assert!(required(&path).allows(Role::Worker), "{m}");
            assert!(!required(&path).allows(Role::Reader), "{m}");
        }
        assert!(!may(
            Role::Worker,
            "/stackhive.v1.FeatureService/UploadFeatureSet"
        ));
        assert_eq!(required("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            required("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Read
        );
    }
}
