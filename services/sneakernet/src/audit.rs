//! `sneakernet audit`: FleetService.Audit on a running node, as an operator, printed for a
//! person; fails when the ledger does not balance or anything is wrong.

use std::path::PathBuf;

use anyhow::bail;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;

use crate::client::{self, authed};
use crate::standalone::StandaloneState;

/// Who calls the audit and where.
#[derive(Clone, Debug)]
pub struct AuditTarget {
    /// The node's gRPC address (`http://host:port`).
    pub address: String,
    /// The operator's email; `None` for the standalone operator of `data_dir`.
    pub email: Option<String>,
    /// The file holding the operator's password; `None` for the standalone operator's.
    pub password_file: Option<PathBuf>,
    /// The standalone node's data directory, where its `standalone.toml` is.
    pub data_dir: PathBuf,
}

/// Logs in, audits, prints the result; an error when the audit found anything wrong.
pub async fn run(target: AuditTarget) -> anyhow::Result<()> {
    let (email, password) = credentials(&target).await?;
    let channel = client::channel(&target.address)?;
    let token = client::login(&channel, &email, &password).await?;
    let audit = audit(&channel, &token).await?;
    for line in report(&audit) {
        println!("{line}");
    }
    verdict(&audit)
}

/// Calls FleetService.Audit with an operator's access token.
pub async fn audit(
    channel: &tonic::transport::Channel,
    operator: &str,
) -> anyhow::Result<pb::AuditResponse> {
    client::call(
        "audit",
        FleetServiceClient::new(channel.clone()).audit(authed(pb::AuditRequest {}, operator)?),
    )
    .await
}

/// The audit as lines for a person: a summary, then one line per violation.
pub fn report(audit: &pb::AuditResponse) -> Vec<String> {
    let checked_at = audit
        .checked_at
        .as_ref()
        .and_then(sneakernet_runtime::wire::from_timestamp)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "an unknown time".to_owned());
    let count = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut lines = vec![format!(
        "audit at {checked_at}: {} and {} checked; ledger {}; {}",
        count(audit.orders_checked, "order", "orders"),
        count(
            audit.transactions_checked,
            "ledger transaction",
            "ledger transactions"
        ),
        if audit.ledger_balanced {
            "balanced"
        } else {
            "NOT balanced"
        },
        match audit.violations.len() {
            0 => "no violations".to_owned(),
            n => count(
                u64::try_from(n).unwrap_or(u64::MAX),
                "violation",
                "violations"
            ),
        }
    )];
    for violation in &audit.violations {
        let kind = pb::AuditViolationKind::try_from(violation.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("AUDIT_VIOLATION_KIND_")
                    .to_owned()
            })
            .unwrap_or_else(|_| format!("kind {}", violation.kind));
        let order = if violation.order_id.is_empty() {
            String::new()
        } else {
            format!(" order {}", violation.order_id)
        };
        lines.push(format!("  {kind}{order}: {}", violation.description));
    }
    lines
}

/// `Ok` only for a balanced ledger and no violations.
pub fn verdict(audit: &pb::AuditResponse) -> anyhow::Result<()> {
    if !audit.ledger_balanced {
        bail!(
            "the ledger does not balance ({} violations)",
            audit.violations.len()
        );
    }
    if !audit.violations.is_empty() {
        bail!("the audit found {} violations", audit.violations.len());
    }
    Ok(())
}

/// The operator's email and password: as given, or the standalone operator's.
async fn credentials(target: &AuditTarget) -> anyhow::Result<(String, String)> {
    let state = StandaloneState::load(&target.data_dir)?;
    let email = match (&target.email, &state) {
        (Some(email), _) => email.clone(),
        (None, Some(state)) => state.operator_email.clone(),
        (None, None) => bail!(
            "no operator given: pass --email and --password-file, or --data-dir of a standalone node (no {} in {})",
            crate::standalone::STATE_FILE,
            target.data_dir.display()
        ),
    };
    let password = match (&target.password_file, &state) {
        (Some(file), _) => crate::standalone::read_password(file).await?,
        (None, Some(state)) if state.operator_email.eq_ignore_ascii_case(&email) => {
            state.operator_password(&target.data_dir).await?
        }
        (None, _) => bail!("no password for {email}: pass --password-file"),
    };
    Ok((email, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_listed_and_fail_the_verdict() {
        let clean = pb::AuditResponse {
            ledger_balanced: true,
            violations: vec![],
            checked_at: None,
            orders_checked: 2,
            transactions_checked: 5,
        };
        assert!(verdict(&clean).is_ok());
        assert_eq!(
            report(&clean),
            vec![
                "audit at an unknown time: 2 orders and 5 ledger transactions checked; ledger balanced; no violations"
            ]
        );
        let mut bad = clean.clone();
        bad.violations.push(pb::AuditViolation {
            order_id: "o-1".into(),
            kind: pb::AuditViolationKind::DuplicateCharge.into(),
            description: "two charges for key k".into(),
        });
        assert!(verdict(&bad).is_err());
        assert_eq!(
            report(&bad)[1],
            "  DUPLICATE_CHARGE order o-1: two charges for key k"
        );
        bad.violations.clear();
        bad.ledger_balanced = false;
        assert!(verdict(&bad).is_err());
    }
}
