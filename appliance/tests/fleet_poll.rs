//! The polling contract end to end: two real boxes on the street clip, the
//! reference poller following both, one box and the poller restarted
//! mid-way. Every event each box stored reaches the poller's output in its
//! final state, and no change is written twice.

mod common;

use std::time::Duration;

use common::poller::{assert_every_change_once, events_from, start_poller};
use common::{import_model, stop, wait_for, Guard, StreetBox};

#[test]
fn every_event_of_two_boxes_arrives_once_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    import_model(&models);
    let a = StreetBox::new(tmp.path(), "a", "");
    let b = StreetBox::new(tmp.path(), "b", "");
    let out = tmp.path().join("events.jsonl");
    let state = tmp.path().join("poll-state");

    let box_a = a.start(&models);
    let box_b = b.start(&models);
    let poller = Guard(Some(start_poller(&[&a, &b], &out, &state, false)));
    wait_for("events from both boxes", || {
        events_from(&out, &a.url) >= 3 && events_from(&out, &b.url) >= 3
    });

    // Box b restarts (its events stay in its database, revisions go on);
    // the poller retries it meanwhile and keeps following a.
    stop(box_b);
    let before_restart = events_from(&out, &b.url);
    std::thread::sleep(Duration::from_secs(2));
    let box_b = b.start(&models);
    wait_for("events from b after its restart", || {
        events_from(&out, &b.url) > before_restart + 2
    });

    // The poller restarts and resumes from its cursors.
    stop(poller);
    let poller = Guard(Some(start_poller(&[&a, &b], &out, &state, false)));
    let so_far = events_from(&out, &a.url);
    wait_for("events from a after the poller's restart", || {
        events_from(&out, &a.url) > so_far + 2
    });

    // Everything stops cleanly: a clean stop closes the open events, a
    // last change each. The boxes come back and the poller drains them once.
    stop(poller);
    stop(box_a);
    stop(box_b);
    let box_a = a.start(&models);
    let box_b = b.start(&models);
    wait_for("both boxes answer again", || {
        [&a, &b].iter().all(|x| x.answers())
    });
    let mut drain = start_poller(&[&a, &b], &out, &state, true);
    let status = drain.wait().unwrap();
    assert!(status.success());
    stop(box_a);
    stop(box_b);
    // Every event a box stored, in its final state, is in the output, except
    // changes made after the drain (by the cameras running again, or the
    // last stop): those have revisions above the last one drained.
    for x in [&a, &b] {
        let events = assert_every_change_once(&out, x);
        assert!(events >= 5, "{}: {events} events", x.url);
    }
}
