//! Who may command devices and read their log through the gateway, in one table: an operator
//! may do everything; a service credential only what its service needs ([`SERVICE_GRANTS`]),
//! so a leaked content credential cannot eject a drive. Checked in `api.rs` before anything is
//! logged.

use sneakernet_runtime::{Caller, Role};

use crate::commands::{lend, provision, release, request_inventory, set_write_protect, wipe};
use crate::error::GatewayError;

/// The roles that may call DeviceCommandService and DeviceEventService at all; a service is
/// then narrowed by its grant.
pub const COMMANDERS: &[Role] = &[Role::Operator, Role::Service];

/// What one service may do at the gateway.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    /// The service (as in its token's subject).
    pub service: &'static str,
    /// The command kinds it may send (stored names).
    pub commands: &'static [&'static str],
    /// Whether it may read commands and the kiosk event log (GetCommand, Subscribe,
    /// ListRefusedMessages).
    pub reads: bool,
}

/// Every service's grant. A service not listed may do nothing here.
pub const SERVICE_GRANTS: &[Grant] = &[
    // Rentals and reservations: lend, provision, protect, wipe and release drives, ask a kiosk
    // what it holds after a failed lend; it follows its commands and the kiosks' events.
    Grant {
        service: "orders",
        commands: &[
            lend::KIND,
            provision::KIND,
            set_write_protect::KIND,
            wipe::KIND,
            release::KIND,
            request_inventory::KIND,
        ],
        reads: true,
    },
    // Content serves kiosks' downloads; it never commands a device.
    Grant {
        service: "content",
        commands: &[],
        reads: false,
    },
];

fn grant_of(service: &str) -> Option<&'static Grant> {
    SERVICE_GRANTS.iter().find(|grant| grant.service == service)
}

/// Passes if `caller` may send some command: checked before a request is read, so a service
/// that may send none (content) is refused as such, whatever the request holds.
pub fn may_command(caller: &Caller) -> Result<(), GatewayError> {
    match caller {
        Caller::Service(name)
            if grant_of(name.as_str()).is_none_or(|grant| grant.commands.is_empty()) =>
        {
            Err(GatewayError::NotAllowed(format!(
                "service {name} may not send commands"
            )))
        }
        _ => Ok(()),
    }
}

/// Passes if `caller` may send a command of `kind` (a stored kind name); PERMISSION_DENIED
/// naming the service and the kind otherwise.
pub fn may_send(caller: &Caller, kind: &str) -> Result<(), GatewayError> {
    match caller {
        Caller::Operator(_) => Ok(()),
        Caller::Service(name)
            if grant_of(name.as_str()).is_some_and(|grant| grant.commands.contains(&kind)) =>
        {
            Ok(())
        }
        Caller::Service(name) => Err(GatewayError::NotAllowed(format!(
            "service {name} may not send {kind} commands"
        ))),
        other => Err(GatewayError::NotAllowed(format!(
            "a {} may not send commands",
            other.role()
        ))),
    }
}

/// Passes if `caller` may read commands and the event log; PERMISSION_DENIED otherwise.
pub fn may_read(caller: &Caller) -> Result<(), GatewayError> {
    match caller {
        Caller::Operator(_) => Ok(()),
        Caller::Service(name) if grant_of(name.as_str()).is_some_and(|grant| grant.reads) => Ok(()),
        Caller::Service(name) => Err(GatewayError::NotAllowed(format!(
            "service {name} may not read device commands or events"
        ))),
        other => Err(GatewayError::NotAllowed(format!(
            "a {} may not read device commands or events",
            other.role()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sneakernet_runtime::ServiceName;

    fn service(name: &str) -> Caller {
        Caller::Service(ServiceName::parse(name).unwrap())
    }

    #[test]
    fn every_known_service_has_a_grant_and_only_orders_commands() {
        for name in ServiceName::KNOWN {
            assert!(grant_of(name).is_some(), "{name} has no row");
        }
        let operator = Caller::Operator(sneakernet_runtime::UserId(uuid::Uuid::nil()));
        let kinds = [
            lend::KIND,
            provision::KIND,
            set_write_protect::KIND,
            wipe::KIND,
            release::KIND,
            request_inventory::KIND,
            crate::commands::force_eject::KIND,
        ];
        for kind in kinds {
            assert!(may_send(&service("content"), kind).is_err(), "{kind}");
            assert_eq!(
                may_send(&service("orders"), kind).is_ok(),
                kind != crate::commands::force_eject::KIND,
                "{kind}"
            );
            assert!(may_send(&operator, kind).is_ok(), "{kind}");
        }
        assert!(may_command(&service("content")).is_err());
        assert!(may_command(&service("orders")).is_ok());
        assert!(may_command(&operator).is_ok());
        assert!(may_read(&service("orders")).is_ok());
        assert!(may_read(&service("content")).is_err());
        assert!(may_read(&operator).is_ok());
    }
}
