//! `stackhive token`: create, list and revoke access tokens. Over gRPC with an admin token, or,
//! for the first admin token of a cluster, straight against the database with `--db` (whoever
//! can write the database already controls the cluster). The secret is printed once.

use clap::{Args, Subcommand};
use serde_json::json;
use stackhive_coordinator::api::tokens;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::token_service_client::TokenServiceClient;

use crate::client::{status_error, Api};
use crate::output::{print_json, Table};

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown once).
    Create {
        /// A label for people: letters, digits and _-.@
        #[arg(long)]
        name: String,
        /// worker, reader, submitter or admin.
        #[arg(long)]
        role: String,
        /// Write it straight into this database instead of asking a coordinator (the first
        /// admin token): postgres://… or sqlite://path.
        #[arg(long, env = "STACKHIVE_TOKEN_DB")]
        db: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by its id; every coordinator refuses it at once.
    Revoke { id: String },
}

pub async fn run(coordinator: &str, json: bool, args: &TokenArgs) -> anyhow::Result<()> {
    if let TokenCommand::Create {
        name,
        role,
        db: Some(db),
    } = &args.command
    {
        let policy = stackhive_coordinator::CoordinatorConfig::with_db(db.as_str()).policy();
        let store = stackhive_coordinator::store::open(db, policy, 2).await?;
        let (rec, secret) = tokens::create(&*store, name, role).await?;
        return print_created(json, &tokens::info(&rec), &secret);
    }
    let api = Api::connect(coordinator).await?;
    let mut client = TokenServiceClient::new(api.channel());
    let fail = |s: tonic::Status| status_error(api.url(), &s);
    match &args.command {
        TokenCommand::Create { name, role, .. } => {
            let r = client
                .create_token(pb::CreateTokenRequest {
                    name: name.clone(),
                    role: role.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            let info = r.token.unwrap_or_default();
            print_created(json, &info, &r.secret)?;
        }
        TokenCommand::List { all } => {
            let listed = client
                .list_tokens(pb::ListTokensRequest {
                    include_revoked: *all,
                })
                .await
                .map_err(fail)?
                .into_inner()
                .tokens;
            if json {
                print_json(&json!(listed.iter().map(info_json).collect::<Vec<_>>()));
                return Ok(());
            }
            let mut t = Table::new(&["ID", "NAME", "ROLE", "CREATED", "REVOKED"]);
            for i in &listed {
                t.push(vec![
                    i.id.clone(),
                    i.name.clone(),
                    i.role.clone(),
                    time(i.created_at_ms),
                    if i.revoked_at_ms == 0 {
                        String::new()
                    } else {
                        time(i.revoked_at_ms)
                    },
                ]);
            }
            out!("{}", t.render());
        }
        TokenCommand::Revoke { id } => {
            let revoked = client
                .revoke_token(pb::RevokeTokenRequest { id: id.clone() })
                .await
                .map_err(fail)?
                .into_inner()
                .revoked;
            if json {
                print_json(&json!({ "id": id, "revoked": revoked }));
            } else if revoked {
                outln!("token {id} revoked");
            } else {
                outln!("token {id} was already revoked");
            }
        }
    }
    Ok(())
}

fn info_json(i: &pb::TokenInfo) -> serde_json::Value {
    json!({
        "id": i.id, "name": i.name, "role": i.role,
        "created_at_ms": i.created_at_ms,
        "revoked_at_ms": (i.revoked_at_ms != 0).then_some(i.revoked_at_ms),
    })
}

fn print_created(json: bool, info: &pb::TokenInfo, secret: &str) -> anyhow::Result<()> {
    if json {
        let mut v = info_json(info);
        v["secret"] = secret.into();
        print_json(&v);
    } else {
        outln!("{secret}");
        eprintln!(
            "token {} ({}, role {}) created; the line above is its secret, shown only now",
            info.id, info.name, info.role
        );
    }
    Ok(())
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}
