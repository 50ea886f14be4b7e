//! The conformance suite of [`StateStore`].

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use serde_json::json;

use crate::budget::{Budget, TaskBudget};
use crate::ids::{Attempt, Stage, StepId, TaskId};
use crate::llm::{LlmCall, Spend, Usage};
use crate::store::{
    AttemptRecord, AttemptStatus, NewTaskOutcome, StateStore, StoreResult, TaskStatus,
};
use crate::wire::{StepMode, StepOutcome, StepRequest, StepResult, StopReason, Variant};

/// Checks that `store` behaves as a [`StateStore`] must, and panics with a message naming the
/// first behaviour that is missing.
///
/// Every task it creates has a fresh random id, so it may run against a store that already
/// holds data, and several times against the same store. It assumes only that the store keeps
/// times to the millisecond and that nothing else writes the suite's own tasks.
///
/// ```no_run
/// # async fn run() {
/// let store = agent_pipeline::store::MemoryStateStore::new();
/// agent_pipeline::conformance::state_store(&store).await;
/// # }
/// ```
pub async fn state_store(store: &dyn StateStore) {
    tasks_are_inserted_once(store).await;
    tasks_are_listed_newest_first(store).await;
    task_status_changes(store).await;
    tasks_move_only_from_the_listed_statuses(store).await;
    attempts_are_reserved_once(store).await;
    results_are_recorded_once(store).await;
    unreserved_results_are_recorded(store).await;
    replay_results_leave_the_task_alone(store).await;
    llm_calls_are_kept_and_add_up_to_the_tasks_spend(store).await;
    a_cancelled_task_keeps_its_status_when_results_arrive(store).await;
    attempts_are_listed_in_pipeline_order(store).await;
    unfinished_attempts_are_listed_oldest_first(store).await;
    consumer_offsets_are_kept_per_group_topic_and_partition(store).await;
    leases_are_exclusive_renewed_taken_over_and_released(store).await;
    offset_commits_are_fenced_by_leases(store).await;
    outbox_messages_are_kept_until_the_tasks_next_result(store).await;
    retention_prunes_only_tasks_that_ended_before_the_cutoff(store).await;
}

/// A task that ended long ago, with design run twice (one LLM call each) and a kept outbox;
/// `ended` is when.
async fn ended_task(store: &dyn StateStore, ended: DateTime<Utc>, status: TaskStatus) -> TaskId {
    let id = TaskId::new();
    ok(store.insert_task(id, "old", ended).await, "insert_task");
    let design = StepId::v1(Stage::Design);
    for n in 1..=2 {
        let reserved = request(id, design, n, ended);
        ok(store.reserve_attempt(&reserved).await, "reserve_attempt");
        let message = crate::store::OutboxMessage {
            topic: "reports".to_owned(),
            key: id.to_string(),
            payload: vec![n as u8],
        };
        ok(
            store
                .finish_attempt_with_outbox(
                    &succeeded_after(
                        &reserved,
                        ended,
                        5,
                        vec![call("test-model", 100, Some(0.5))],
                    ),
                    Some(status),
                    ended,
                    &[message],
                )
                .await,
            "finish_attempt_with_outbox",
        );
    }
    id
}

async fn retention_prunes_only_tasks_that_ended_before_the_cutoff(store: &dyn StateStore) {
    use crate::store::Pruning;
    // Long before anything else the suite writes, so that other cases' tasks stay out.
    let t0 = DateTime::<Utc>::from_timestamp(978_307_200, 0).unwrap_or_default();
    let cutoff = t0 + secs(3600);
    let design = StepId::v1(Stage::Design);

    let old = ended_task(store, t0, TaskStatus::Done).await;
    let failed_old = ended_task(store, t0, TaskStatus::Error).await;
    let running = ended_task(store, t0, TaskStatus::Running).await;
    let cancel = |id: TaskId, at: DateTime<Utc>| async move {
        let moved = ok(
            store
                .transition_task(id, &TaskStatus::ACTIVE, TaskStatus::Cancelled, at)
                .await,
            "transition_task",
        );
        assert!(moved, "a running task can be cancelled");
    };
    let cancelled_old = ended_task(store, t0, TaskStatus::Running).await;
    cancel(cancelled_old, t0).await;
    let cancelled_recently = ended_task(store, t0, TaskStatus::Running).await;
    cancel(cancelled_recently, cutoff + secs(1)).await;
    let awaiting = ended_task(store, t0, TaskStatus::AwaitingApproval).await;
    let recent = ended_task(store, cutoff + secs(1), TaskStatus::Done).await;
    let replaying = ended_task(store, t0, TaskStatus::Done).await;
    ok(
        store
            .reserve_attempt(&request(replaying, design, 3, t0))
            .await,
        "reserve_attempt",
    );
    let replayed = ended_task(store, t0, TaskStatus::Done).await;
    let late = request(replayed, design, 3, cutoff + secs(60));
    ok(store.reserve_attempt(&late).await, "reserve_attempt");
    ok(
        store
            .finish_attempt(
                &succeeded(&late, cutoff + secs(60), 5),
                None,
                cutoff + secs(61),
            )
            .await,
        "finish_attempt",
    );

    let listed = |pruning| async move {
        ok(
            store.prunable_tasks(cutoff, pruning, usize::MAX).await,
            "prunable_tasks",
        )
    };
    let history = listed(Pruning::History).await;
    for (id, what) in [
        (old, "a done task"),
        (failed_old, "a failed task"),
        (cancelled_old, "a cancelled task"),
    ] {
        assert!(
            history.contains(&id),
            "{what} that ended before the cutoff must be prunable"
        );
    }
    for (id, what) in [
        (running, "a running task"),
        (awaiting, "a task awaiting approval"),
        (recent, "a task that ended after the cutoff"),
        (cancelled_recently, "a task cancelled after the cutoff"),
        (replaying, "a task with a replay requested"),
        (replayed, "a task replayed after the cutoff"),
    ] {
        assert!(!history.contains(&id), "{what} must never be prunable");
        assert!(
            !ok(
                store.prune_task(id, cutoff, Pruning::WholeTask).await,
                "prune_task"
            ),
            "{what} must not be pruned"
        );
        assert!(
            ok(store.task(id).await, "task").is_some(),
            "{what} must be kept"
        );
    }
    assert_eq!(
        ok(
            store.prunable_tasks(cutoff, Pruning::History, 1).await,
            "prunable_tasks"
        )
        .len(),
        1,
        "the limit holds"
    );

    assert!(ok(
        store.prune_task(old, cutoff, Pruning::History).await,
        "prune_task"
    ));
    let kept: Vec<Attempt> = ok(store.attempts(old).await, "attempts")
        .iter()
        .map(AttemptRecord::attempt)
        .collect();
    assert_eq!(kept, [attempt(2)], "only the step's last attempt is kept");
    assert!(
        ok(store.outbox(old, design, attempt(2)).await, "outbox").is_empty(),
        "the outbox of a pruned task is dropped"
    );
    let pruned = expect_task(store, old).await;
    assert_eq!(pruned.status, TaskStatus::Done);
    assert_eq!(
        (pruned.spend.calls, pruned.spend.cost_usd),
        (2, 1.0),
        "pruning history keeps what the task spent, the pruned attempt's calls included"
    );
    assert!(
        !listed(Pruning::History).await.contains(&old),
        "a pruned task has no history left to prune"
    );
    assert!(
        !ok(
            store.prune_task(old, cutoff, Pruning::History).await,
            "prune_task"
        ),
        "pruning twice does nothing"
    );
    assert_eq!(
        ok(store.last_attempt(old, design).await, "last_attempt"),
        Some(attempt(2)),
        "attempt numbers go on from the kept one"
    );

    assert!(listed(Pruning::WholeTask).await.contains(&old));
    assert!(ok(
        store.prune_task(old, cutoff, Pruning::WholeTask).await,
        "prune_task"
    ));
    assert_eq!(
        ok(store.task(old).await, "task"),
        None,
        "a deleted task is gone"
    );
    assert!(ok(store.attempts(old).await, "attempts").is_empty());
    assert!(!listed(Pruning::WholeTask).await.contains(&old));
    assert!(
        ok(
            store
                .prune_task(failed_old, cutoff, Pruning::WholeTask)
                .await,
            "prune_task"
        ),
        "a failed task is deleted too"
    );
    assert!(
        ok(
            store
                .prune_task(cancelled_old, cutoff, Pruning::History)
                .await,
            "prune_task"
        ),
        "a cancelled task's history is pruned"
    );
    assert!(
        ok(
            store
                .prune_task(cancelled_old, cutoff, Pruning::WholeTask)
                .await,
            "prune_task"
        ),
        "a cancelled task is deleted"
    );
    assert_eq!(
        ok(store.task(cancelled_old).await, "task"),
        None,
        "a deleted cancelled task is gone"
    );
}

async fn outbox_messages_are_kept_until_the_tasks_next_result(store: &dyn StateStore) {
    let id = TaskId::new();
    let t0 = now();
    ok(store.insert_task(id, "outbox", t0).await, "insert_task");
    let design = StepId::v1(Stage::Design);
    let reserved = request(id, design, 1, t0);
    ok(store.reserve_attempt(&reserved).await, "reserve_attempt");
    let message = |n: u8| crate::store::OutboxMessage {
        topic: "reports".to_owned(),
        key: id.to_string(),
        payload: vec![n, 0, 255],
    };
    let outbox = |attempt_number: u32| {
        let step = design;
        async move {
            ok(
                store.outbox(id, step, attempt(attempt_number)).await,
                "outbox",
            )
        }
    };
    assert!(
        outbox(1).await.is_empty(),
        "nothing is kept before the result"
    );
    let result = succeeded(&reserved, t0, 10);
    assert!(ok(
        store
            .finish_attempt_with_outbox(
                &result,
                Some(TaskStatus::Running),
                t0,
                &[message(1), message(2)]
            )
            .await,
        "finish_attempt_with_outbox"
    ));
    assert_eq!(
        outbox(1).await,
        vec![message(1), message(2)],
        "the messages are kept with the result, in order, byte for byte"
    );
    assert!(
        !ok(
            store
                .finish_attempt_with_outbox(&result, Some(TaskStatus::Done), t0, &[message(3)])
                .await,
            "finish_attempt_with_outbox"
        ),
        "a redelivered result is not recorded again"
    );
    assert_eq!(
        outbox(1).await,
        vec![message(1), message(2)],
        "a redelivered result keeps nothing more"
    );
    assert!(
        outbox(2).await.is_empty(),
        "another attempt has nothing kept"
    );
    let implement = StepId::v1(Stage::Implement);
    let next = request(id, implement, 1, t0);
    ok(store.reserve_attempt(&next).await, "reserve_attempt");
    assert!(ok(
        store
            .finish_attempt_with_outbox(&succeeded(&next, t0, 10), None, t0, &[message(4)])
            .await,
        "finish_attempt_with_outbox"
    ));
    assert!(
        outbox(1).await.is_empty(),
        "the task's next result replaces what was kept"
    );
    assert_eq!(
        ok(store.outbox(id, implement, one()).await, "outbox"),
        vec![message(4)]
    );
}

async fn leases_are_exclusive_renewed_taken_over_and_released(store: &dyn StateStore) {
    let prefix = format!("conformance/{}/", TaskId::new());
    let resource = format!("{prefix}p0");
    let t0 = now();
    let acquire = |holder: &'static str, at: DateTime<Utc>, until: DateTime<Utc>| {
        let resource = resource.clone();
        async move {
            ok(
                store.acquire_lease(&resource, holder, at, until).await,
                "acquire_lease",
            )
        }
    };
    let first = acquire("a", t0, t0 + secs(10))
        .await
        .unwrap_or_else(|| panic!("a free resource must be granted"));
    assert_eq!(
        (
            first.holder.as_str(),
            first.resource.as_str(),
            first.expires_at
        ),
        ("a", resource.as_str(), t0 + secs(10))
    );
    assert_eq!(
        acquire("b", t0 + secs(5), t0 + secs(15)).await,
        None,
        "a running lease keeps other holders out"
    );
    let renewed = acquire("a", t0 + secs(5), t0 + secs(20))
        .await
        .unwrap_or_else(|| panic!("the holder must be able to renew its lease"));
    assert_eq!(renewed.epoch, first.epoch, "a renewal keeps the epoch");
    assert_eq!(
        renewed.expires_at,
        t0 + secs(20),
        "a renewal extends the lease"
    );
    assert_eq!(
        acquire("b", t0 + secs(15), t0 + secs(25)).await,
        None,
        "the renewed lease still runs at 15 s"
    );
    let listed = ok(store.leases(&prefix, t0 + secs(15)).await, "leases");
    assert_eq!(listed, vec![renewed.clone()], "the running lease is listed");
    let taken = acquire("b", t0 + secs(20), t0 + secs(30))
        .await
        .unwrap_or_else(|| panic!("an expired lease must be taken over"));
    assert_eq!(taken.holder, "b");
    assert_eq!(
        taken.epoch,
        first.epoch + 1,
        "the epoch grows when the holder changes"
    );
    // The old holder releasing its lost lease changes nothing.
    ok(
        store.release_lease(&renewed, t0 + secs(21)).await,
        "release_lease",
    );
    assert_eq!(
        acquire("a", t0 + secs(22), t0 + secs(32)).await,
        None,
        "a stale release must not free the new holder's lease"
    );
    ok(
        store.release_lease(&taken, t0 + secs(23)).await,
        "release_lease",
    );
    assert!(
        ok(store.leases(&prefix, t0 + secs(23)).await, "leases").is_empty(),
        "a released lease no longer runs"
    );
    let back = acquire("a", t0 + secs(23), t0 + secs(33))
        .await
        .unwrap_or_else(|| panic!("a released resource must be granted at once"));
    assert_eq!(back.epoch, taken.epoch + 1);
    assert!(
        ok(
            store.leases(&format!("{prefix}other"), t0 + secs(23)).await,
            "leases"
        )
        .is_empty(),
        "only leases under the prefix are listed"
    );
}

async fn offset_commits_are_fenced_by_leases(store: &dyn StateStore) {
    let group = format!("group-{}", TaskId::new());
    let resource = format!("partition/{group}/t/0");
    let t0 = now();
    let old = ok(
        store.acquire_lease(&resource, "a", t0, t0 + secs(10)).await,
        "acquire_lease",
    )
    .unwrap_or_else(|| panic!("a free resource must be granted"));
    let commit = |lease: crate::store::Lease, offset: u64| {
        let group = group.clone();
        async move {
            ok(
                store
                    .commit_consumer_offset_fenced(&group, "t", 0, offset, &lease)
                    .await,
                "commit_consumer_offset_fenced",
            )
        }
    };
    assert!(
        commit(old.clone(), 5).await,
        "the holder's commit is recorded"
    );
    assert_eq!(
        ok(
            store.consumer_offset(&group, "t", 0).await,
            "consumer_offset"
        ),
        Some(5)
    );
    let new = ok(
        store
            .acquire_lease(&resource, "b", t0 + secs(11), t0 + secs(20))
            .await,
        "acquire_lease",
    )
    .unwrap_or_else(|| panic!("an expired lease must be taken over"));
    assert!(
        !commit(old, 9).await,
        "a holder that lost the lease cannot commit"
    );
    assert_eq!(
        ok(
            store.consumer_offset(&group, "t", 0).await,
            "consumer_offset"
        ),
        Some(5),
        "the refused commit changed nothing"
    );
    assert!(commit(new, 7).await, "the new holder commits");
    assert_eq!(
        ok(
            store.consumer_offset(&group, "t", 0).await,
            "consumer_offset"
        ),
        Some(7)
    );
}

async fn consumer_offsets_are_kept_per_group_topic_and_partition(store: &dyn StateStore) {
    let group = format!("group-{}", TaskId::new());
    let read = |group: String, topic: &'static str, partition: u32| async move {
        ok(
            store.consumer_offset(&group, topic, partition).await,
            "consumer_offset",
        )
    };
    assert_eq!(
        read(group.clone(), "t", 0).await,
        None,
        "a group that never committed has no offset"
    );
    let commit = |group: String, topic: &'static str, partition: u32, offset: u64| async move {
        ok(
            store
                .commit_consumer_offset(&group, topic, partition, offset)
                .await,
            "commit_consumer_offset",
        )
    };
    commit(group.clone(), "t", 0, 7).await;
    commit(group.clone(), "t", 1, 3).await;
    commit(group.clone(), "u", 0, 11).await;
    assert_eq!(read(group.clone(), "t", 0).await, Some(7));
    assert_eq!(read(group.clone(), "t", 1).await, Some(3));
    assert_eq!(read(group.clone(), "u", 0).await, Some(11));
    assert_eq!(
        read(format!("{group}-other"), "t", 0).await,
        None,
        "offsets belong to one group"
    );
    commit(group.clone(), "t", 0, 9).await;
    assert_eq!(
        read(group.clone(), "t", 0).await,
        Some(9),
        "a later commit replaces the offset"
    );
    commit(group.clone(), "t", 0, 2).await;
    assert_eq!(
        read(group.clone(), "t", 0).await,
        Some(2),
        "a commit may move the offset back (a reset after retention removed messages)"
    );
    let listed: Vec<(String, String, u32, u64)> =
        ok(store.consumer_offsets().await, "consumer_offsets")
            .into_iter()
            .filter(|(listed, _, _, _)| *listed == group)
            .collect();
    assert_eq!(
        listed,
        [
            (group.clone(), "t".to_owned(), 0, 2),
            (group.clone(), "t".to_owned(), 1, 3),
            (group.clone(), "u".to_owned(), 0, 11)
        ],
        "consumer_offsets lists every position, sorted"
    );
}

async fn tasks_are_inserted_once(store: &dyn StateStore) {
    let id = TaskId::new();
    let t0 = now();
    assert_eq!(
        ok(
            store.insert_task(id, "add a /health endpoint", t0).await,
            "insert_task"
        ),
        NewTaskOutcome::Created,
        "insert_task of a new task id must return Created"
    );
    assert_eq!(
        ok(
            store
                .insert_task(id, "add a /health endpoint", t0 + secs(1))
                .await,
            "insert_task"
        ),
        NewTaskOutcome::AlreadyExists,
        "insert_task of an existing id with the same prompt (a redelivered message) must return \
         AlreadyExists"
    );
    assert_eq!(
        ok(
            store.insert_task(id, "something else", t0 + secs(2)).await,
            "insert_task"
        ),
        NewTaskOutcome::Conflict,
        "insert_task of an existing id with another prompt must return Conflict"
    );

    let task = ok(store.task(id).await, "task");
    let task = task.unwrap_or_else(|| panic!("task({id}) must find the task just inserted"));
    assert_eq!(task.task_id, id, "task() returned another task");
    assert_eq!(
        task.prompt, "add a /health endpoint",
        "the prompt must be the first one; AlreadyExists and Conflict must change nothing"
    );
    assert_eq!(
        task.status,
        TaskStatus::Received,
        "a new task must be Received"
    );
    assert_eq!(
        task.current_step, None,
        "a new task must have no current step"
    );
    assert_eq!(
        task.created_at, t0,
        "created_at must be the insertion time, kept"
    );
    assert_eq!(
        task.updated_at, t0,
        "updated_at of a new task must be its insertion time"
    );

    assert_eq!(
        ok(store.task(TaskId::new()).await, "task"),
        None,
        "task() of an unknown id must return None"
    );
}

async fn tasks_are_listed_newest_first(store: &dyn StateStore) {
    // Created in the future, so that these are the newest tasks even in a store shared with
    // other runs, and inserted out of order, so that insertion order cannot pass for time order.
    let base = now() + TimeDelta::hours(1);
    let oldest = (TaskId::new(), base);
    let middle = (TaskId::new(), base + secs(1));
    let newest = (TaskId::new(), base + secs(2));
    for (id, at) in [middle, newest, oldest] {
        assert_eq!(
            ok(store.insert_task(id, "list me", at).await, "insert_task"),
            NewTaskOutcome::Created,
            "insert_task of a new task id must return Created"
        );
    }

    let two = ok(store.tasks(2).await, "tasks");
    assert_eq!(two.len(), 2, "tasks(2) must return 2 tasks when more exist");
    assert_sorted_newest_first(&two, "tasks(2)");
    assert!(
        two[0].created_at >= newest.1,
        "tasks(2) must start with the newest task, got one created at {}",
        two[0].created_at
    );
    assert!(
        ok(store.tasks(0).await, "tasks").is_empty(),
        "tasks(0) must return no task"
    );

    let all = ok(store.tasks(usize::MAX).await, "tasks");
    assert_sorted_newest_first(&all, "tasks(usize::MAX)");
    let position = |id: TaskId| {
        all.iter()
            .position(|t| t.task_id == id)
            .unwrap_or_else(|| panic!("tasks(usize::MAX) must list every task, {id} is missing"))
    };
    assert!(
        position(newest.0) < position(middle.0) && position(middle.0) < position(oldest.0),
        "tasks() must list newer tasks before older ones"
    );
}

fn assert_sorted_newest_first(tasks: &[crate::store::TaskRecord], what: &str) {
    assert!(
        tasks.windows(2).all(|w| w[0].created_at >= w[1].created_at),
        "{what} must be sorted newest first, got {:?}",
        tasks.iter().map(|t| t.created_at).collect::<Vec<_>>()
    );
}

async fn task_status_changes(store: &dyn StateStore) {
    let id = TaskId::new();
    let t0 = now();
    ok(
        store.insert_task(id, "change my status", t0).await,
        "insert_task",
    );
    let design = StepId::v1(Stage::Design);

    ok(
        store
            .set_task_status(id, TaskStatus::Running, Some(design), t0 + secs(1))
            .await,
        "set_task_status",
    );
    let task = expect_task(store, id).await;
    assert_eq!(
        task.status,
        TaskStatus::Running,
        "set_task_status must set the status"
    );
    assert_eq!(
        task.current_step,
        Some(design),
        "set_task_status must set the step"
    );
    assert_eq!(
        task.updated_at,
        t0 + secs(1),
        "set_task_status must set updated_at"
    );
    assert_eq!(
        task.created_at, t0,
        "set_task_status must not change created_at"
    );
    assert_eq!(
        task.prompt, "change my status",
        "set_task_status must not change the prompt"
    );

    ok(
        store
            .set_task_status(id, TaskStatus::Done, None, t0 + secs(2))
            .await,
        "set_task_status",
    );
    let task = expect_task(store, id).await;
    assert_eq!(
        task.status,
        TaskStatus::Done,
        "set_task_status must set the status"
    );
    assert_eq!(
        task.current_step,
        Some(design),
        "set_task_status without a step must keep the current step"
    );
    assert_eq!(
        task.updated_at,
        t0 + secs(2),
        "set_task_status must set updated_at"
    );

    let unknown = TaskId::new();
    ok(
        store
            .set_task_status(unknown, TaskStatus::Error, Some(design), t0)
            .await,
        "set_task_status of an unknown task",
    );
    assert_eq!(
        ok(store.task(unknown).await, "task"),
        None,
        "set_task_status of an unknown task must not create it"
    );
}

async fn tasks_move_only_from_the_listed_statuses(store: &dyn StateStore) {
    let id = TaskId::new();
    let other = TaskId::new();
    let t0 = now();
    ok(
        store.insert_task(id, "decide on me", t0).await,
        "insert_task",
    );
    ok(
        store.insert_task(other, "leave me", t0).await,
        "insert_task",
    );
    let design = StepId::v1(Stage::Design);
    ok(
        store
            .set_task_status(id, TaskStatus::Running, Some(design), t0 + secs(1))
            .await,
        "set_task_status",
    );
    let before = expect_task(store, id).await;
    let transition = |task: TaskId, from: &'static [TaskStatus], to, at| async move {
        ok(
            store.transition_task(task, from, to, at).await,
            "transition_task",
        )
    };

    assert!(
        !transition(
            id,
            &[TaskStatus::Received, TaskStatus::AwaitingApproval],
            TaskStatus::Cancelled,
            t0 + secs(2)
        )
        .await,
        "transition_task from statuses the task is not in must return false"
    );
    assert_eq!(
        expect_task(store, id).await,
        before,
        "transition_task that does not apply must change nothing"
    );
    assert!(
        !transition(id, &[], TaskStatus::Done, t0 + secs(2)).await,
        "transition_task from no status must return false"
    );

    assert!(
        transition(id, &TaskStatus::ACTIVE, TaskStatus::Cancelled, t0 + secs(3)).await,
        "transition_task from a listed status must return true"
    );
    let task = expect_task(store, id).await;
    assert_eq!(
        task.status,
        TaskStatus::Cancelled,
        "transition_task must set the new status"
    );
    assert_eq!(
        task.updated_at,
        t0 + secs(3),
        "transition_task must set updated_at"
    );
    assert_eq!(
        (task.current_step, task.created_at, task.prompt.as_str()),
        (Some(design), t0, "decide on me"),
        "transition_task must keep the current step, created_at and the prompt"
    );
    assert!(
        !transition(id, &TaskStatus::ACTIVE, TaskStatus::Error, t0 + secs(4)).await,
        "a second decision must not apply once the first moved the task out of `from`"
    );
    assert_eq!(
        expect_task(store, id).await,
        task,
        "a decision that does not apply must change nothing"
    );
    let untouched = expect_task(store, other).await;
    assert_eq!(
        (untouched.status, untouched.updated_at),
        (TaskStatus::Received, t0),
        "transition_task must change only its own task"
    );

    // The other statuses are stored and matched too.
    ok(
        store
            .set_task_status(other, TaskStatus::AwaitingApproval, Some(design), t0)
            .await,
        "set_task_status",
    );
    assert_eq!(
        expect_task(store, other).await.status,
        TaskStatus::AwaitingApproval,
        "a task awaiting approval must read back so"
    );
    assert!(
        transition(
            other,
            &[TaskStatus::AwaitingApproval],
            TaskStatus::Done,
            t0 + secs(5)
        )
        .await,
        "transition_task from awaiting_approval must apply to a task awaiting approval"
    );
    assert_eq!(expect_task(store, other).await.status, TaskStatus::Done);

    let unknown = TaskId::new();
    assert!(
        !transition(unknown, &TaskStatus::ALL, TaskStatus::Cancelled, t0).await,
        "transition_task of an unknown task must return false"
    );
    assert_eq!(
        ok(store.task(unknown).await, "task"),
        None,
        "transition_task of an unknown task must not create it"
    );
}

async fn llm_calls_are_kept_and_add_up_to_the_tasks_spend(store: &dyn StateStore) {
    let id = TaskId::new();
    let bystander = TaskId::new();
    let t0 = now();
    ok(store.insert_task(id, "spend", t0).await, "insert_task");
    ok(
        store.insert_task(bystander, "spend nothing", t0).await,
        "insert_task",
    );
    assert_eq!(
        expect_task(store, id).await.spend,
        Spend::default(),
        "a new task has spent nothing"
    );
    let [design, implement, test, _] = Stage::ALL.map(StepId::v1);

    // A failure after two calls, one of them to a model without a price.
    let first = request(id, design, 1, t0);
    ok(store.reserve_attempt(&first).await, "reserve_attempt");
    let failed_calls = vec![
        call("test-model", 1000, Some(0.25)),
        LlmCall {
            error: Some("HTTP 500".to_owned()),
            ..call("unpriced-model", 400, None)
        },
    ];
    let finish = |result: StepResult, status| async move {
        ok(
            store.finish_attempt(&result, status, t0 + secs(5)).await,
            "finish_attempt",
        )
    };
    assert!(
        finish(
            failed_after(&first, t0, 10, failed_calls.clone()),
            Some(TaskStatus::Running)
        )
        .await
    );
    // A success never reserved, a step stopped by the budget, a replay (which moves no task
    // but spends all the same) and a success without calls.
    let second = request(id, design, 2, t0);
    let success_calls = vec![call("test-model", 2000, Some(0.5))];
    assert!(
        finish(
            succeeded_after(&second, t0, 10, success_calls.clone()),
            Some(TaskStatus::Running)
        )
        .await
    );
    let stopped = request(id, implement, 1, t0);
    ok(store.reserve_attempt(&stopped).await, "reserve_attempt");
    let stopped_calls = vec![call("test-model", 3000, Some(0.125))];
    assert!(
        finish(
            stopped_after(&stopped, t0, 10, stopped_calls.clone()),
            Some(TaskStatus::Error)
        )
        .await
    );
    let replay = StepRequest {
        mode: StepMode::Replay,
        ..request(id, design, 3, t0)
    };
    ok(store.reserve_attempt(&replay).await, "reserve_attempt");
    let replay_calls = vec![
        call("other-model", 500, Some(0.0625)),
        call("other-model", 700, Some(0.03125)),
    ];
    assert!(finish(succeeded_after(&replay, t0, 10, replay_calls.clone()), None).await);
    let quiet = request(id, test, 1, t0);
    assert!(finish(succeeded(&quiet, t0, 10), None).await);
    let open = request(id, test, 2, t0);
    ok(store.reserve_attempt(&open).await, "reserve_attempt");

    for (request, calls) in [
        (&first, &failed_calls),
        (&second, &success_calls),
        (&stopped, &stopped_calls),
        (&replay, &replay_calls),
    ] {
        assert_eq!(
            &expect_attempt(store, id, request.step_id, request.attempt.get())
                .await
                .calls,
            calls,
            "attempt {} of {} must keep its LLM calls, in order, whole",
            request.attempt,
            request.step_id
        );
    }
    for request in [&quiet, &open] {
        assert!(
            expect_attempt(store, id, request.step_id, request.attempt.get())
                .await
                .calls
                .is_empty(),
            "an attempt without calls (or still requested) has none"
        );
    }
    let stopped_record = expect_attempt(store, id, implement, 1).await;
    assert_eq!(
        (
            stopped_record.status,
            stopped_record.error.as_deref(),
            stopped_record.model.as_deref()
        ),
        (
            AttemptStatus::Failed,
            Some("the task reached its limit of 0.75 USD"),
            None
        ),
        "a stopped step is recorded as failed, with the reason in words as its error"
    );

    let expected = Spend {
        usage: Usage {
            prompt_tokens: 7600,
            completion_tokens: 760,
            total_tokens: 8360,
        },
        cost_usd: 0.96875,
        calls: 6,
        unpriced_calls: 1,
    };
    let task = expect_task(store, id).await;
    assert_eq!(
        task.spend, expected,
        "the task's spend must be the sum of the calls of every recorded attempt (failed, \
         stopped and replayed ones included)"
    );
    let attempts = ok(store.attempts(id).await, "attempts");
    assert_eq!(
        attempts.iter().map(|a| Spend::of(&a.calls)).sum::<Spend>(),
        task.spend,
        "the task's spend must equal the sum over attempts()"
    );
    let listed = ok(store.tasks(usize::MAX).await, "tasks")
        .into_iter()
        .find(|t| t.task_id == id)
        .unwrap_or_else(|| panic!("tasks() must list task {id}"));
    assert_eq!(listed.spend, expected, "tasks() must show the spend too");
    assert_eq!(
        (task.status, task.current_step),
        (TaskStatus::Error, Some(implement)),
        "a stopped step moves the task like any result"
    );

    // Redelivered results, with other calls, must add nothing.
    assert!(
        !finish(
            succeeded_after(&second, t0, 10, vec![call("test-model", 9999, Some(8.0))]),
            Some(TaskStatus::Running)
        )
        .await,
        "a redelivered result must not be recorded again"
    );
    assert!(
        !finish(
            failed_after(&first, t0, 10, failed_calls.clone()),
            Some(TaskStatus::Running)
        )
        .await
    );
    assert_eq!(
        expect_task(store, id).await,
        task,
        "a redelivered result must not change the task nor add to its spend"
    );
    assert_eq!(
        expect_attempt(store, id, design, 2).await.calls,
        success_calls,
        "a redelivered result must not replace the calls kept"
    );
    assert_eq!(
        expect_task(store, bystander).await.spend,
        Spend::default(),
        "another task's calls must not count"
    );
}

async fn a_cancelled_task_keeps_its_status_when_results_arrive(store: &dyn StateStore) {
    let id = TaskId::new();
    let t0 = now();
    ok(store.insert_task(id, "cancel me", t0).await, "insert_task");
    let [design, implement, ..] = Stage::ALL.map(StepId::v1);
    ok(
        store
            .set_task_status(id, TaskStatus::Running, Some(design), t0 + secs(1))
            .await,
        "set_task_status",
    );
    let running = request(id, design, 1, t0 + secs(1));
    ok(store.reserve_attempt(&running).await, "reserve_attempt");
    assert!(ok(
        store
            .transition_task(id, &TaskStatus::ACTIVE, TaskStatus::Cancelled, t0 + secs(2))
            .await,
        "transition_task"
    ));

    // The step that was running when the task was cancelled reports afterwards.
    let calls = vec![call("test-model", 1200, Some(0.25))];
    assert!(
        ok(
            store
                .finish_attempt(
                    &succeeded_after(&running, t0 + secs(1), 10, calls.clone()),
                    Some(TaskStatus::Running),
                    t0 + secs(3)
                )
                .await,
            "finish_attempt"
        ),
        "a result of a cancelled task must still be recorded"
    );
    let record = expect_attempt(store, id, design, 1).await;
    assert_eq!(
        (record.status, record.finished_at, &record.calls),
        (AttemptStatus::Succeeded, Some(t0 + secs(3)), &calls),
        "the attempt of a cancelled task must be recorded with its calls"
    );
    let task = expect_task(store, id).await;
    assert_eq!(
        task.status,
        TaskStatus::Cancelled,
        "a result must not move a cancelled task"
    );
    assert_eq!(
        (task.current_step, task.updated_at),
        (Some(design), t0 + secs(2)),
        "a result must leave a cancelled task's step and time alone"
    );
    assert_eq!(
        task.spend,
        Spend::of(&calls),
        "what a cancelled task's last steps spent still counts"
    );

    let late = request(id, implement, 1, t0 + secs(4));
    assert!(ok(
        store
            .finish_attempt_with_outbox(
                &stopped_after(&late, t0 + secs(4), 10, Vec::new()),
                Some(TaskStatus::Done),
                t0 + secs(5),
                &[]
            )
            .await,
        "finish_attempt_with_outbox"
    ));
    assert_eq!(
        expect_task(store, id).await.status,
        TaskStatus::Cancelled,
        "no result moves a cancelled task, whatever status it asks for"
    );
}

async fn attempts_are_reserved_once(store: &dyn StateStore) {
    let id = TaskId::new();
    let t0 = now();
    ok(store.insert_task(id, "reserve", t0).await, "insert_task");
    let design = StepId::v1(Stage::Design);
    // A request with every optional field set, to check that it is kept whole.
    let first = StepRequest {
        try_number: 2,
        mode: StepMode::Replay,
        round: 2,
        reason: Some("the design missed the rate limit".to_owned()),
        not_before: Some(t0 + secs(30)),
        budget: Some(TaskBudget {
            limits: Budget {
                max_tokens: Some(50_000),
                max_cost_usd: Some(1.5),
                max_wall_time_secs: Some(600),
                max_rounds: Some(3),
            },
            started_at: t0 - secs(60),
            spent: Spend::of(&[call("test-model", 1000, Some(0.25))]),
        }),
        require_approval: true,
        variant: Some(Variant {
            model: Some("another-model".to_owned()),
            prompt: Some("an edited prompt".to_owned()),
            pinned: [(StepId::v1(Stage::Implement), attempt(2))].into(),
            continue_downstream: true,
            ..Variant::default()
        }),
        ..request(id, design, 1, t0)
    };

    assert!(
        ok(store.reserve_attempt(&first).await, "reserve_attempt"),
        "reserve_attempt of a new attempt must return true"
    );
    let again = request(id, design, 1, t0 + secs(5));
    assert!(
        !ok(store.reserve_attempt(&again).await, "reserve_attempt"),
        "reserve_attempt of an attempt already reserved must return false"
    );
    assert_eq!(
        expect_attempt(store, id, design, 1).await,
        requested(&first),
        "a reserved attempt must be Requested with its first request kept whole"
    );
    assert!(
        ok(
            store.reserve_attempt(&request(id, design, 2, t0)).await,
            "reserve_attempt"
        ),
        "reserve_attempt of the next attempt number must return true"
    );
    assert_eq!(
        ok(
            store.attempt(id, StepId::v1(Stage::Test), one()).await,
            "attempt"
        ),
        None,
        "attempt() of an attempt never recorded must return None"
    );
}

async fn results_are_recorded_once(store: &dyn StateStore) {
    let id = TaskId::new();
    let t0 = now();
    ok(store.insert_task(id, "finish", t0).await, "insert_task");
    let design = StepId::v1(Stage::Design);
    let reserved = request(id, design, 1, t0);
    ok(store.reserve_attempt(&reserved).await, "reserve_attempt");

    let result = succeeded(&reserved, t0 + secs(1), 1500);
    let finished_at = t0 + secs(3);
    assert!(
        ok(
            store
                .finish_attempt(&result, Some(TaskStatus::Running), finished_at)
                .await,
            "finish_attempt"
        ),
        "finish_attempt of a reserved attempt must return true"
    );
    let expected = AttemptRecord {
        request: reserved.clone(),
        status: AttemptStatus::Succeeded,
        error: None,
        model: Some("test-model".to_owned()),
        finished_at: Some(finished_at),
        duration_ms: Some(1500),
        calls: Vec::new(),
    };
    assert_eq!(
        expect_attempt(store, id, design, 1).await,
        expected,
        "finish_attempt must record the result and keep the reserved request"
    );
    let task = expect_task(store, id).await;
    assert_eq!(
        task.status,
        TaskStatus::Running,
        "finish_attempt must move the task to the given status"
    );
    assert_eq!(
        task.current_step,
        Some(design),
        "finish_attempt must make the finished step the task's current step"
    );
    assert_eq!(
        task.updated_at, finished_at,
        "finish_attempt must set the task's updated_at"
    );

    // The same attempt again, e.g. a redelivered message (here with another outcome, to see
    // that nothing of it is kept).
    let redelivered = failed(&reserved, t0 + secs(2), 99);
    assert!(
        !ok(
            store
                .finish_attempt(&redelivered, Some(TaskStatus::Error), t0 + secs(9))
                .await,
            "finish_attempt"
        ),
        "finish_attempt of an attempt already finished must return false"
    );
    assert_eq!(
        expect_attempt(store, id, design, 1).await,
        expected,
        "a second result for a finished attempt must not change the record"
    );
    let unchanged = expect_task(store, id).await;
    assert_eq!(
        unchanged, task,
        "a second result for a finished attempt must not change the task"
    );
    assert!(
        !ok(store.reserve_attempt(&reserved).await, "reserve_attempt"),
        "reserve_attempt of a finished attempt must return false"
    );
    assert_eq!(
        expect_attempt(store, id, design, 1).await,
        expected,
        "reserve_attempt of a finished attempt must not change it"
    );
}

async fn unreserved_results_are_recorded(store: &dyn StateStore) {
    let id = TaskId::new();
    let t0 = now();
    ok(store.insert_task(id, "unreserved", t0).await, "insert_task");
    let implement = StepId::v1(Stage::Implement);
    // Never reserved: e.g. the state store was replaced while the worker ran.
    let never_reserved = StepRequest {
        mode: StepMode::Replay,
        reason: Some("try again".to_owned()),
        ..request(id, implement, 3, t0)
    };
    let result = failed(&never_reserved, t0 + secs(1), 250);
    let finished_at = t0 + secs(2);
    assert!(
        ok(
            store
                .finish_attempt(&result, Some(TaskStatus::Error), finished_at)
                .await,
            "finish_attempt"
        ),
        "finish_attempt of an attempt never reserved must return true"
    );
    let record = expect_attempt(store, id, implement, 3).await;
    assert_eq!(
        record.status,
        AttemptStatus::Failed,
        "a failed result must be Failed"
    );
    assert_eq!(
        record.error.as_deref(),
        Some("the model timed out"),
        "a failed result must keep its error"
    );
    assert_eq!(record.model, None, "a failed result has no model");
    assert_eq!(
        record.finished_at,
        Some(finished_at),
        "finished_at must be kept"
    );
    assert_eq!(record.duration_ms, Some(250), "duration_ms must be kept");
    assert_eq!(
        (record.task_id(), record.step_id(), record.attempt()),
        (id, implement, attempt(3)),
        "an attempt recorded from a result must be that result's attempt"
    );
    assert_eq!(
        record.mode(),
        StepMode::Replay,
        "the mode must come from the result"
    );
    assert_eq!(
        record.request.reason.as_deref(),
        Some("try again"),
        "the replay reason must come from the result"
    );
    assert_eq!(
        record.request.requested_at,
        t0 + secs(1),
        "an attempt recorded from a result counts as requested when the worker started it"
    );
    let task = expect_task(store, id).await;
    assert_eq!(
        (task.status, task.current_step),
        (TaskStatus::Error, Some(implement)),
        "finish_attempt of an unreserved attempt must still move the task"
    );
    assert_eq!(
        ok(store.last_attempt(id, implement).await, "last_attempt"),
        Some(attempt(3)),
        "last_attempt must count an attempt recorded from a result"
    );
    assert!(
        !ok(
            store
                .finish_attempt(&result, Some(TaskStatus::Done), t0 + secs(5))
                .await,
            "finish_attempt"
        ),
        "finish_attempt must return false the second time for an unreserved attempt too"
    );
    assert_eq!(
        expect_task(store, id).await.status,
        TaskStatus::Error,
        "a second result must not move the task"
    );
}

async fn replay_results_leave_the_task_alone(store: &dyn StateStore) {
    let id = TaskId::new();
    let t0 = now();
    ok(store.insert_task(id, "replayed", t0).await, "insert_task");
    let review = StepId::v1(Stage::Review);
    ok(
        store
            .set_task_status(id, TaskStatus::Done, Some(review), t0 + secs(1))
            .await,
        "set_task_status",
    );
    let before = expect_task(store, id).await;
    let replay = StepRequest {
        mode: StepMode::Replay,
        ..request(id, StepId::v1(Stage::Implement), 2, t0 + secs(2))
    };
    ok(store.reserve_attempt(&replay).await, "reserve_attempt");
    let result = failed(&replay, t0 + secs(3), 10);
    assert!(
        ok(
            store.finish_attempt(&result, None, t0 + secs(4)).await,
            "finish_attempt"
        ),
        "finish_attempt without a task status must still record the attempt"
    );
    assert_eq!(
        expect_task(store, id).await,
        before,
        "finish_attempt without a task status must leave the task as it was"
    );
}

async fn attempts_are_listed_in_pipeline_order(store: &dyn StateStore) {
    let id = TaskId::new();
    let other = TaskId::new();
    let t0 = now();
    ok(store.insert_task(id, "order", t0).await, "insert_task");
    ok(
        store.insert_task(other, "order too", t0).await,
        "insert_task",
    );
    assert!(
        ok(store.attempts(id).await, "attempts").is_empty(),
        "attempts() of a task without attempts must be empty"
    );
    let [design, implement, test, review] = Stage::ALL.map(StepId::v1);

    // Inserted against pipeline order (review first, attempt 10 before 9 before 1), and
    // requested in the opposite order, so that neither insertion nor request time nor text
    // order of the numbers can pass for the right order.
    let inserted = [
        (review, 1),
        (review, 2),
        (test, 10),
        (test, 9),
        (test, 1),
        (implement, 1),
        (design, 2),
        (design, 1),
    ];
    for (n, (step, number)) in inserted.into_iter().enumerate() {
        let at = t0 - secs(i64::try_from(n).unwrap_or(0));
        assert!(
            ok(
                store.reserve_attempt(&request(id, step, number, at)).await,
                "reserve_attempt"
            ),
            "reserve_attempt of a new attempt must return true"
        );
    }
    ok(
        store.reserve_attempt(&request(other, design, 1, t0)).await,
        "reserve_attempt",
    );
    ok(
        store
            .finish_attempt(
                &succeeded(&request(id, design, 2, t0), t0, 10),
                Some(TaskStatus::Running),
                t0,
            )
            .await,
        "finish_attempt",
    );

    let listed: Vec<(StepId, u32)> = ok(store.attempts(id).await, "attempts")
        .iter()
        .map(|a| (a.step_id(), a.attempt().get()))
        .collect();
    let expected = vec![
        (design, 1),
        (design, 2),
        (implement, 1),
        (test, 1),
        (test, 9),
        (test, 10),
        (review, 1),
        (review, 2),
    ];
    assert_eq!(
        listed, expected,
        "attempts() must list this task's attempts (only), by stage in pipeline order, then by \
         attempt number"
    );

    let last = |step| async move { ok(store.last_attempt(id, step).await, "last_attempt") };
    assert_eq!(
        last(design).await,
        Some(attempt(2)),
        "last_attempt must count finished attempts"
    );
    assert_eq!(
        last(test).await,
        Some(attempt(10)),
        "last_attempt must return the highest attempt number (10 > 9 > 1)"
    );
    assert_eq!(
        last(review).await,
        Some(attempt(2)),
        "last_attempt of review"
    );
    assert_eq!(
        ok(store.last_attempt(other, review).await, "last_attempt"),
        None,
        "last_attempt of a step without attempts must be None (other tasks do not count)"
    );
}

async fn unfinished_attempts_are_listed_oldest_first(store: &dyn StateStore) {
    let id = TaskId::new();
    let t0 = now();
    ok(store.insert_task(id, "unfinished", t0).await, "insert_task");
    let [design, implement, test, _] = Stage::ALL.map(StepId::v1);
    // Requested long ago, so that these are older than anything else a shared store holds.
    let oldest = request(id, test, 1, t0 - TimeDelta::days(3));
    let finished = request(id, design, 1, t0 - TimeDelta::days(2));
    let newer = request(id, implement, 1, t0 - TimeDelta::days(1));
    for r in [&newer, &finished, &oldest] {
        ok(store.reserve_attempt(r).await, "reserve_attempt");
    }
    ok(
        store
            .finish_attempt(&succeeded(&finished, t0, 10), Some(TaskStatus::Running), t0)
            .await,
        "finish_attempt",
    );

    let open = ok(store.unfinished_attempts().await, "unfinished_attempts");
    assert!(
        open.iter().all(|a| a.status == AttemptStatus::Requested),
        "unfinished_attempts must return only Requested attempts"
    );
    assert!(
        open.windows(2)
            .all(|w| w[0].request.requested_at <= w[1].request.requested_at),
        "unfinished_attempts must be sorted oldest request first"
    );
    let mine: Vec<AttemptRecord> = open.into_iter().filter(|a| a.task_id() == id).collect();
    assert_eq!(
        mine,
        vec![requested(&oldest), requested(&newer)],
        "unfinished_attempts must return the requested attempts, whole, oldest first, and not \
         the finished one"
    );

    ok(
        store
            .finish_attempt(&failed(&oldest, t0, 10), Some(TaskStatus::Running), t0)
            .await,
        "finish_attempt",
    );
    ok(
        store
            .finish_attempt(&failed(&newer, t0, 10), Some(TaskStatus::Error), t0)
            .await,
        "finish_attempt",
    );
    assert!(
        ok(store.unfinished_attempts().await, "unfinished_attempts")
            .iter()
            .all(|a| a.task_id() != id),
        "unfinished_attempts must not return finished attempts"
    );
}

/// The current time, to the millisecond (the precision the suite asks of a store).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn one() -> Attempt {
    Attempt::FIRST
}

fn attempt(n: u32) -> Attempt {
    Attempt::new(n).unwrap_or_else(|e| panic!("attempt {n}: {e}"))
}

fn request(task_id: TaskId, step_id: StepId, n: u32, requested_at: DateTime<Utc>) -> StepRequest {
    StepRequest {
        task_id,
        step_id,
        attempt: attempt(n),
        try_number: 1,
        mode: StepMode::Run,
        round: 1,
        reason: None,
        not_before: None,
        requested_at,
        budget: None,
        require_approval: false,
        variant: None,
    }
}

fn requested(request: &StepRequest) -> AttemptRecord {
    AttemptRecord {
        request: request.clone(),
        status: AttemptStatus::Requested,
        error: None,
        model: None,
        finished_at: None,
        duration_ms: None,
        calls: Vec::new(),
    }
}

/// A success without LLM calls.
fn succeeded(request: &StepRequest, started_at: DateTime<Utc>, duration_ms: u64) -> StepResult {
    succeeded_after(request, started_at, duration_ms, Vec::new())
}

/// A success after `calls`.
fn succeeded_after(
    request: &StepRequest,
    started_at: DateTime<Utc>,
    duration_ms: u64,
    calls: Vec<LlmCall>,
) -> StepResult {
    let spend = Spend::of(&calls);
    let outcome = StepOutcome::Succeeded {
        output: json!({ "design_summary": "a summary" }),
        model: "test-model".to_owned(),
        usage: spend.usage,
    };
    StepResult::of(request, outcome, calls, started_at, duration_ms)
}

/// A failure without LLM calls.
fn failed(request: &StepRequest, started_at: DateTime<Utc>, duration_ms: u64) -> StepResult {
    failed_after(request, started_at, duration_ms, Vec::new())
}

/// A failure after `calls`.
fn failed_after(
    request: &StepRequest,
    started_at: DateTime<Utc>,
    duration_ms: u64,
    calls: Vec<LlmCall>,
) -> StepResult {
    let outcome = StepOutcome::Failed {
        error: "the model timed out".to_owned(),
        retryable: true,
    };
    StepResult::of(request, outcome, calls, started_at, duration_ms)
}

/// A step stopped by its task's budget after `calls`.
fn stopped_after(
    request: &StepRequest,
    started_at: DateTime<Utc>,
    duration_ms: u64,
    calls: Vec<LlmCall>,
) -> StepResult {
    let outcome = StepOutcome::Stopped {
        cause: StopReason::BudgetExceeded,
        detail: "the task reached its limit of 0.75 USD".to_owned(),
    };
    StepResult::of(request, outcome, calls, started_at, duration_ms)
}

/// One LLM call of `model` with `tokens` prompt tokens and a tenth as many completion tokens,
/// costing `cost_usd` (`None`: the model has no price). Costs in the suite are sums of powers
/// of two, exact in binary, so that sums in any order are equal.
fn call(model: &str, tokens: u64, cost_usd: Option<f64>) -> LlmCall {
    LlmCall {
        model: model.to_owned(),
        provider: None,
        prompt_tokens: tokens,
        completion_tokens: tokens / 10,
        cost_usd,
        duration_ms: tokens / 2,
        error: None,
    }
}

async fn expect_task(store: &dyn StateStore, id: TaskId) -> crate::store::TaskRecord {
    ok(store.task(id).await, "task").unwrap_or_else(|| panic!("task {id} must exist"))
}

async fn expect_attempt(store: &dyn StateStore, id: TaskId, step: StepId, n: u32) -> AttemptRecord {
    ok(store.attempt(id, step, attempt(n)).await, "attempt")
        .unwrap_or_else(|| panic!("attempt {n} of {step} of task {id} must be recorded"))
}

/// The value of a store call, or a panic naming the call.
fn ok<T>(result: StoreResult<T>, call: &str) -> T {
    result.unwrap_or_else(|e| panic!("{call} failed: {e}"))
}
