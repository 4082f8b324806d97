//! The account: `register`, `login`, `logout`, `deposit pay|refund`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::json;
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use tonic_types::StatusExt;

use super::output::{self, money};
use super::profile::StoredLogin;
use super::{Client, exit};

/// Who logs in or registers.
#[derive(Clone, Debug, clap::Args)]
pub struct Credentials {
    /// The account's email.
    #[arg(long)]
    pub email: String,
    /// File holding the password (first line); without it, a prompt on a terminal, else the
    /// first line of standard input. Never a flag value, which every user of the machine
    /// could read in the process list.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// Deposit subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DepositAction {
    /// Pay the deposit (the permission to rent) with a card; its amount is the one the node
    /// asks now unless --amount-minor is given.
    Pay {
        /// The card token (with the sandbox provider a test card number, e.g.
        /// 4242424242424242); remembered as the account's payment method.
        #[arg(long)]
        card: String,
        /// The amount in minor units (cents) the user agreed to, with --currency; refused
        /// when the node asks another amount.
        #[arg(long, requires = "currency")]
        amount_minor: Option<i64>,
        /// The amount's currency, e.g. EUR.
        #[arg(long, requires = "amount_minor")]
        currency: Option<String>,
        /// The payment's idempotency key (default: a new one, printed); pass the printed key
        /// again to retry without paying twice.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Ask for the deposit back (nothing may be out).
    Refund {
        /// The refund's idempotency key (default: a new one, printed).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

/// Reads the password from `--password-file`; else, on a terminal, asks for it without echo
/// (twice for a new account); else from the first line of standard input. Nothing at all is
/// a usage mistake (exit 2) naming `--password-file`.
fn password(credentials: &Credentials, new_account: bool) -> anyhow::Result<String> {
    if let Some(file) = &credentials.password_file {
        return Ok(sneakernet_auth::read_secret_file(file)?);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        password_from(
            &credentials.email,
            new_account,
            Source::Terminal(&|prompt| rpassword::prompt_password(prompt)),
        )
    } else {
        password_from(
            &credentials.email,
            new_account,
            Source::Lines(&mut stdin.lock()),
        )
    }
}

/// Where a password not in a file comes from.
enum Source<'a> {
    /// A prompt on the terminal (shows the text, reads without echo).
    Terminal(&'a dyn Fn(&str) -> std::io::Result<String>),
    /// Standard input that is not a terminal: its first line.
    Lines(&'a mut dyn BufRead),
}

fn password_from(email: &str, new_account: bool, source: Source<'_>) -> anyhow::Result<String> {
    let no_password = || {
        exit::usage(
            "no password given: pass --password-file FILE, type it at a terminal, or write it on standard input",
        )
    };
    match source {
        Source::Terminal(prompt) => {
            let first = prompt(&format!("password for {email}: "))
                .context("cannot read the password from the terminal")?;
            if first.is_empty() {
                return Err(no_password());
            }
            if new_account {
                let again = prompt("the same password again: ")
                    .context("cannot read the password from the terminal")?;
                if again != first {
                    return Err(exit::usage(
                        "the two passwords differ; nothing was registered",
                    ));
                }
            }
            Ok(first)
        }
        Source::Lines(lines) => {
            let mut line = String::new();
            lines
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            let line = line.trim_end_matches(['\n', '\r']).to_owned();
            if line.is_empty() {
                return Err(no_password());
            }
            Ok(line)
        }
    }
}

/// `register` (`new_account`) or `login`: keeps the session in the profile.
pub async fn sign_in(
    client: &Client,
    credentials: &Credentials,
    new_account: bool,
) -> anyhow::Result<()> {
    let password = password(credentials, new_account)?;
    let target = client.auth_target()?;
    let mut auth_client = AuthServiceClient::new(target.channel.clone());
    let email = credentials.email.clone();
    let session = if new_account {
        target
            .call(
                &format!("register {email}"),
                auth_client.register(auth::RegisterRequest {
                    email: email.clone(),
                    password,
                }),
            )
            .await?
            .session
    } else {
        target
            .call(
                &format!("log in as {email}"),
                auth_client.login(auth::LoginRequest {
                    email: email.clone(),
                    password,
                }),
            )
            .await?
            .session
    }
    .context("the answer carries no session")?;
    let login = StoredLogin::from_session(&target.address, &email, session);
    let file = client.profile()?.save(&login)?;
    client.output.print(
        json!({
            "email": login.email,
            "userId": login.user_id,
            "role": login.role,
            "address": login.address,
            "registered": new_account,
        }),
        || {
            vec![format!(
                "{} {} (role {}, account {}) at {}; login kept in {}",
                if new_account {
                    "registered and logged in as"
                } else {
                    "logged in as"
                },
                login.email,
                login.role,
                login.user_id,
                login.address,
                file.display()
            )]
        },
    );
    Ok(())
}

/// `logout`: ends the session at the node (best effort) and forgets it here.
pub async fn logout(client: &Client) -> anyhow::Result<()> {
    let target = client.auth_target()?;
    let profile = client.profile()?;
    let Some(login) = profile.load(&target.address)? else {
        client.output.print(
            json!({"address": target.address, "loggedOut": false}),
            || vec![format!("not logged in at {}", target.address)],
        );
        return Ok(());
    };
    // The login is forgotten here whatever the node says: an unreachable node or a session it
    // already ended must not keep a user logged in on this machine.
    let remote = async {
        let token = profile.token(target).await?;
        // A renewal spent the kept refresh token: end the session by the current one.
        let refresh_token = profile
            .load(&target.address)?
            .map(|login| login.refresh_token().to_owned())
            .unwrap_or_default();
        let mut auth_client = AuthServiceClient::new(target.channel.clone());
        target
            .call(
                "log out",
                auth_client.logout(super::authed(
                    auth::LogoutRequest { refresh_token },
                    &token,
                )?),
            )
            .await
    }
    .await;
    profile.forget(&target.address)?;
    let note = match &remote {
        Ok(_) => String::new(),
        Err(error) => format!(" (the node did not confirm: {error:#})"),
    };
    client.output.print(
        json!({"address": target.address, "email": login.email, "loggedOut": true, "nodeConfirmed": remote.is_ok()}),
        || vec![format!("logged out {} at {}{note}", login.email, target.address)],
    );
    Ok(())
}

/// `deposit pay|refund`.
pub async fn deposit(client: &Client, action: DepositAction) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let mut orders = OrderServiceClient::new(target.channel.clone());
    match action {
        DepositAction::Pay {
            card,
            amount_minor,
            currency,
            idempotency_key,
        } => {
            let card = pb::PaymentMethod {
                method: Some(pb::payment_method::Method::CardToken(card)),
            };
            let amount = match (amount_minor, currency) {
                (Some(minor_units), Some(currency)) => common::Money {
                    minor_units,
                    currency,
                },
                _ => deposit_asked(client, &mut orders, &token, &card).await?,
            };
            let key = super::idempotency_key(idempotency_key);
            let paid = target
                .call(
                    "pay the deposit",
                    orders.pay_deposit(super::authed(
                        pb::PayDepositRequest {
                            amount: Some(amount),
                            payment_method: Some(card),
                            idempotency_key: key.clone(),
                        },
                        &token,
                    )?),
                )
                .await?;
            let deposit = paid.deposit.clone().unwrap_or_default();
            let mut value = output::json("sneakernet.orders.v1.PayDepositResponse", &paid)?;
            value["idempotencyKey"] = key.clone().into();
            client.output.print(value, || {
                vec![format!(
                    "deposit {} paid: {} (idempotency key {key})",
                    deposit.deposit_id,
                    money(deposit.amount.as_ref())
                )]
            });
        }
        DepositAction::Refund { idempotency_key } => {
            let key = super::idempotency_key(idempotency_key);
            let refunded = target
                .call(
                    "refund the deposit",
                    orders.refund_deposit(super::authed(
                        pb::RefundDepositRequest {
                            idempotency_key: key.clone(),
                        },
                        &token,
                    )?),
                )
                .await?;
            let deposit = refunded.deposit.clone().unwrap_or_default();
            let mut value = output::json("sneakernet.orders.v1.RefundDepositResponse", &refunded)?;
            value["idempotencyKey"] = key.clone().into();
            client.output.print(value, || {
                vec![format!(
                    "deposit {} {}: {} paid back so far (idempotency key {key})",
                    deposit.deposit_id,
                    pb::DepositState::try_from(deposit.state)
                        .map(|s| s.as_str_name())
                        .unwrap_or("UNKNOWN")
                        .trim_start_matches("DEPOSIT_STATE_"),
                    money(deposit.refunded.as_ref())
                )]
            });
        }
    }
    Ok(())
}

/// The deposit the node asks now: a PayDeposit of nothing is refused before any charge with
/// DEPOSIT_AMOUNT_CHANGED, whose ErrorInfo states the amount.
async fn deposit_asked(
    client: &Client,
    orders: &mut OrderServiceClient<tonic::transport::Channel>,
    token: &str,
    card: &pb::PaymentMethod,
) -> anyhow::Result<common::Money> {
    let target = client.target()?;
    let probe = super::authed(
        pb::PayDepositRequest {
            amount: Some(common::Money {
                minor_units: 0,
                currency: "EUR".into(),
            }),
            payment_method: Some(card.clone()),
            idempotency_key: super::idempotency_key(None),
        },
        token,
    )?;
    let answer = tokio::time::timeout(crate::client::CALL_TIMEOUT, orders.pay_deposit(probe))
        .await
        .map_err(|_| anyhow::anyhow!("ask the deposit: no answer in time"))?;
    let status = match answer {
        Ok(_) => bail!("ask the deposit: the node accepted a deposit of nothing"),
        Err(status) => status,
    };
    let info = status
        .get_details_error_info()
        .filter(|info| info.metadata.contains_key("deposit_minor_units"));
    let Some(info) = info else {
        return Err(target.refused("ask the deposit", &status));
    };
    let minor_units = info.metadata["deposit_minor_units"]
        .parse::<i64>()
        .context("ask the deposit: the amount stated is not a number")?;
    let currency = info
        .metadata
        .get("deposit_currency")
        .cloned()
        .context("ask the deposit: no currency stated")?;
    Ok(common::Money {
        minor_units,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminal_answering(answers: &[&str]) -> impl Fn(&str) -> std::io::Result<String> {
        let answers = std::sync::Mutex::new(
            answers
                .iter()
                .rev()
                .map(|a| (*a).to_owned())
                .collect::<Vec<_>>(),
        );
        move |_prompt: &str| {
            Ok(answers
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .pop()
                .unwrap_or_default())
        }
    }

    #[test]
    fn a_terminal_is_asked_once_for_a_login_and_twice_for_a_new_account() {
        let login = terminal_answering(&["secret words"]);
        assert_eq!(
            password_from("a@example.com", false, Source::Terminal(&login)).unwrap(),
            "secret words"
        );
        let register = terminal_answering(&["secret words", "secret words"]);
        assert_eq!(
            password_from("a@example.com", true, Source::Terminal(&register)).unwrap(),
            "secret words"
        );
        let typo = terminal_answering(&["secret words", "secret wrods"]);
        let error = password_from("a@example.com", true, Source::Terminal(&typo)).unwrap_err();
        assert_eq!(exit::code_of(&error), exit::USAGE);
        assert!(error.to_string().contains("differ"), "{error}");
    }

    #[test]
    fn no_password_anywhere_is_a_usage_mistake_naming_the_flag() {
        let empty = terminal_answering(&[""]);
        let mut nothing: &[u8] = b"";
        let mut piped: &[u8] = b"piped words\nmore\n";
        for error in [
            password_from("a@example.com", false, Source::Terminal(&empty)).unwrap_err(),
            password_from("a@example.com", false, Source::Lines(&mut nothing)).unwrap_err(),
        ] {
            assert_eq!(exit::code_of(&error), exit::USAGE);
            assert!(error.to_string().contains("--password-file"), "{error}");
        }
        assert_eq!(
            password_from("a@example.com", true, Source::Lines(&mut piped)).unwrap(),
            "piped words"
        );
    }
}
