//! `sneakernet audit`: FleetService.Audit on a running node, as an operator, printed for a
//! person; fails when the ledger does not balance or anything is wrong.

use anyhow::bail;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;

use crate::client::{self, authed};
use crate::operator::OperatorSession;

/// Logs in, audits, prints the result; an error when the audit found anything wrong.
pub async fn run(session: &OperatorSession) -> anyhow::Result<()> {
    let audit = audit(&session.channel, &session.token).await?;
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
