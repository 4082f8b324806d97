//! The double-entry ledger: every movement of money is a posting whose entries sum to zero in
//! each currency, so an auditor can always re-add the books.
//!
//! Sign convention: a positive amount is money flowing into an account (a debit in accounting
//! terms for asset accounts); a posting moves money from the accounts with negative entries to
//! those with positive ones.
//!
//! Accounts: the payment provider's clearing account (money in flight between the card network
//! and us), user funds (per user: what a user has paid and not yet been charged for or refunded),
//! deposits held (per user), revenue, and refunds paid.

use std::collections::BTreeMap;

use super::money::{Currency, Money, MoneyError};

/// One account of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// Money the payment provider has taken from or given back to cards.
    ProviderClearing,
    /// What one user has paid that is not yet earned or returned.
    UserFunds(String),
    /// One user's deposit, held while anything is out.
    DepositHeld(String),
    /// Money earned (prices, late fees, lost-item fees).
    Revenue,
    /// Money paid back to users.
    RefundsPaid,
}

/// Why a posting was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The entries do not sum to zero in this currency.
    #[error("posting does not balance in {currency}: off by {off} minor units")]
    Unbalanced {
        /// The currency that does not balance.
        currency: Currency,
        /// The sum of its entries.
        off: i64,
    },
    /// A posting needs at least two entries.
    #[error("a posting needs at least two entries")]
    TooFewEntries,
    /// Arithmetic failed.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// A balanced set of entries: one movement of money.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    entries: Vec<(Account, Money)>,
}

impl Posting {
    /// Checks that `entries` sum to zero in every currency.
    pub fn new(entries: Vec<(Account, Money)>) -> Result<Self, LedgerError> {
        if entries.len() < 2 {
            return Err(LedgerError::TooFewEntries);
        }
        let mut sums: BTreeMap<Currency, Money> = BTreeMap::new();
        for (_, amount) in &entries {
            let sum = sums
                .entry(amount.currency())
                .or_insert_with(|| Money::zero(amount.currency()));
            *sum = sum.checked_add(*amount)?;
        }
        if let Some(off) = sums.values().find(|sum| !sum.is_zero()) {
            return Err(LedgerError::Unbalanced {
                currency: off.currency(),
                off: off.minor(),
            });
        }
        Ok(Self { entries })
    }

    /// A user pays `amount` (a price, a fee, a deposit) through the provider.
    pub fn user_pays(user: &str, amount: Money) -> Result<Self, LedgerError> {
        Self::new(vec![
            (Account::ProviderClearing, amount.checked_neg()?),
            (Account::UserFunds(user.to_owned()), amount),
        ])
    }

    /// What a user paid becomes revenue (the item was lent, a fee is due).
    pub fn earn(user: &str, amount: Money) -> Result<Self, LedgerError> {
        Self::new(vec![
            (Account::UserFunds(user.to_owned()), amount.checked_neg()?),
            (Account::Revenue, amount),
        ])
    }

    /// What a user paid goes back to the user's card.
    pub fn refund(user: &str, amount: Money) -> Result<Self, LedgerError> {
        Self::new(vec![
            (Account::UserFunds(user.to_owned()), amount.checked_neg()?),
            (Account::RefundsPaid, amount),
        ])
    }

    /// A user's paid deposit is set aside as held.
    pub fn hold_deposit(user: &str, amount: Money) -> Result<Self, LedgerError> {
        Self::new(vec![
            (Account::UserFunds(user.to_owned()), amount.checked_neg()?),
            (Account::DepositHeld(user.to_owned()), amount),
        ])
    }

    /// A held deposit is released back to the user's funds (then refunded, or kept for fees).
    pub fn release_deposit(user: &str, amount: Money) -> Result<Self, LedgerError> {
        Self::new(vec![
            (Account::DepositHeld(user.to_owned()), amount.checked_neg()?),
            (Account::UserFunds(user.to_owned()), amount),
        ])
    }

    /// The entries.
    pub fn entries(&self) -> &[(Account, Money)] {
        &self.entries
    }
}

/// Balances of every account after `postings`, per currency (what the auditor re-adds).
pub fn balances<'a>(
    postings: impl IntoIterator<Item = &'a Posting>,
) -> Result<BTreeMap<(Account, Currency), Money>, MoneyError> {
    let mut balances = BTreeMap::new();
    for posting in postings {
        for (account, amount) in &posting.entries {
            let balance = balances
                .entry((account.clone(), amount.currency()))
                .or_insert_with(|| Money::zero(amount.currency()));
            *balance = balance.checked_add(*amount)?;
        }
    }
    Ok(balances)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap())
    }

    #[test]
    fn unbalanced_postings_are_refused() {
        let refused = Posting::new(vec![
            (Account::Revenue, eur(100)),
            (Account::ProviderClearing, eur(-99)),
        ]);
        assert!(matches!(
            refused,
            Err(LedgerError::Unbalanced { off: 1, .. })
        ));
        assert_eq!(
            Posting::new(vec![(Account::Revenue, eur(0))]),
            Err(LedgerError::TooFewEntries)
        );
        let yen = Money::new(100, Currency::parse("JPY").unwrap());
        let mixed = Posting::new(vec![
            (Account::Revenue, eur(100)),
            (Account::ProviderClearing, yen.checked_neg().unwrap()),
        ]);
        assert!(
            matches!(mixed, Err(LedgerError::Unbalanced { .. })),
            "currencies never offset each other"
        );
    }

    #[test]
    fn a_rental_refunded_after_a_jam_leaves_the_user_whole() {
        let postings = [
            Posting::user_pays("u1", eur(500)).unwrap(),
            Posting::refund("u1", eur(500)).unwrap(),
        ];
        let books = balances(&postings).unwrap();
        let currency = eur(0).currency();
        assert_eq!(books[&(Account::UserFunds("u1".into()), currency)], eur(0));
        assert_eq!(books[&(Account::RefundsPaid, currency)], eur(500));
        assert_eq!(books[&(Account::ProviderClearing, currency)], eur(-500));
    }

    fn any_account() -> impl Strategy<Value = Account> {
        prop_oneof![
            Just(Account::ProviderClearing),
            Just(Account::Revenue),
            Just(Account::RefundsPaid),
            "[ab]".prop_map(Account::UserFunds),
            "[ab]".prop_map(Account::DepositHeld),
        ]
    }

    proptest! {
        /// Any sequence of valid postings leaves the books summing to zero in each currency.
        #[test]
        fn random_postings_always_balance(
            moves in prop::collection::vec((any_account(), any_account(), 0i64..1_000_000, any::<bool>()), 0..60),
        ) {
            let mut postings = Vec::new();
            for (from, to, minor, yen) in moves {
                let currency = Currency::parse(if yen { "JPY" } else { "EUR" }).unwrap();
                let amount = Money::new(minor, currency);
                postings.push(Posting::new(vec![(from, amount.checked_neg().unwrap()), (to, amount)]).unwrap());
            }
            let books = balances(&postings).unwrap();
            for code in ["EUR", "JPY"] {
                let currency = Currency::parse(code).unwrap();
                let total: i64 = books.iter().filter(|((_, c), _)| *c == currency).map(|(_, m)| m.minor()).sum();
                prop_assert_eq!(total, 0);
            }
        }
    }
}
