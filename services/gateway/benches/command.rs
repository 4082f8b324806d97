//! The command life cycle's one transition function, on the paths every command takes
//! (docs/benchmarks.md, scenario 4). Under `cargo test --benches` each body runs once.
//!
//! No baseline: the transition is a `match` on two enums; the number says what a gateway pays
//! per command event before any I/O, beside the database write that follows it.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sneakernet_gateway::domain::command::{CommandEvent, CommandState, transition};

/// A command's usual life: sent, resent after a reconnect, acked, the ack repeated, done.
const USUAL: [CommandEvent; 5] = [
    CommandEvent::Send,
    CommandEvent::Send,
    CommandEvent::Ack,
    CommandEvent::Ack,
    CommandEvent::Succeed,
];

fn walk(events: &[CommandEvent]) -> CommandState {
    let mut state = CommandState::Queued;
    for &event in events {
        if let Ok(moved) = transition(black_box(state), black_box(event)) {
            state = moved.to;
        }
    }
    state
}

fn command_transition(c: &mut Criterion) {
    let mut group = c.benchmark_group("gateway_command_transition");
    group.bench_function("usual_life_5_events", |b| {
        b.iter(|| walk(black_box(&USUAL)))
    });
    group.bench_function("every_pair_30", |b| {
        b.iter(|| {
            let mut legal = 0u32;
            for &from in &CommandState::ALL {
                for &event in &CommandEvent::ALL {
                    legal += u32::from(transition(black_box(from), black_box(event)).is_ok());
                }
            }
            legal
        })
    });
    group.finish();
}

criterion_group!(benches, command_transition);
criterion_main!(benches);
