//! A test client on matrix-rust-sdk 0.18, set up the way Element X sets it up: password login,
//! then the encryption bootstrap the SDK runs by itself right after login (cross-signing without
//! UIA, then a key backup, then recovery). It prints one JSON object per line on stdout, which
//! the Node tests read; logs go to stderr.
//!
//! Usage: `switchboard-rust-client <mode> <homeserver URL> <user> <password>`, where mode is
//! - `e2ee`: log in, wait for the encryption bootstrap, report it;
//! - `rooms`: log in, run the `SyncService` (simplified sliding sync, two connections) until the
//!   room list is fully loaded (it holds as many rooms as the server counts), print every room
//!   with its name and latest event, then the count (`ready`), then keep printing each room's new
//!   latest event until stdin closes;
//! - `chat <room ID> <text>`: the same sync, then print every message received (decrypted, with
//!   whether it was encrypted), send `text` to the room, and at the end (stdin closed) wait for the
//!   key backup to be up to date.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use matrix_sdk::encryption::{BackupDownloadStrategy, EncryptionSettings};
use matrix_sdk::latest_events::LatestEventValue;
use matrix_sdk::sliding_sync::VersionBuilder;
use matrix_sdk::deserialized_responses::EncryptionInfo;
use matrix_sdk::ruma::events::room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent};
use matrix_sdk::ruma::RoomId;
use matrix_sdk::{Client, Room, RoomDisplayName, RoomState};
use matrix_sdk::stream::StreamExt;
use matrix_sdk_ui::eyeball_im::Vector;
use matrix_sdk_ui::room_list_service::filters::new_filter_non_left;
use matrix_sdk_ui::room_list_service::{RoomListItem, RoomListLoadingState};
use matrix_sdk_ui::sync_service::SyncService;
use serde_json::{json, Value};

/// A guard against a hang, not a measurement.
const GIVE_UP: Duration = Duration::from_secs(30);

fn emit(line: Value) {
    println!("{line}");
}

/// What Element X turns on (`autoEnableCrossSigning`, `autoEnableBackups`).
fn element_x_encryption() -> EncryptionSettings {
    EncryptionSettings {
        auto_enable_cross_signing: true,
        auto_enable_backups: true,
        backup_download_strategy: BackupDownloadStrategy::AfterDecryptionFailure,
    }
}

/// Logs in; `sliding_sync` makes Element X's check that `/versions` advertises simplified sliding sync.
async fn login(homeserver: &str, user: &str, password: &str, sliding_sync: bool) -> Result<Client> {
    let version = if sliding_sync { VersionBuilder::DiscoverNative } else { VersionBuilder::None };
    let client = Client::builder()
        .homeserver_url(homeserver)
        .sliding_sync_version_builder(version)
        .with_encryption_settings(element_x_encryption())
        .build()
        .await
        .context("building the client (GET /versions)")?;
    client
        .matrix_auth()
        .login_username(user, password)
        .initial_device_display_name("Switchboard Rust test client")
        .await
        .context("password login")?;
    emit(json!({
        "step": "logged_in",
        "user_id": client.user_id().map(|u| u.to_string()),
        "device_id": client.device_id().map(|d| d.to_string()),
    }));
    Ok(client)
}

/// Waits for the SDK's own post-login encryption setup, then reports what it achieved.
async fn e2ee(client: &Client) -> Result<()> {
    let encryption = client.encryption();
    encryption.wait_for_e2ee_initialization_tasks().await;
    let status = encryption.cross_signing_status().await;
    let backups = encryption.backups();
    emit(json!({
        "step": "e2ee",
        "cross_signing": status.map(|s| json!({
            "master": s.has_master,
            "self_signing": s.has_self_signing,
            "user_signing": s.has_user_signing,
        })),
        "backup_state": format!("{:?}", backups.state()),
        "backup_enabled": backups.are_enabled().await,
        "backup_on_server": backups.fetch_exists_on_server().await.context("GET /room_keys/version")?,
    }));
    let own = encryption.get_own_device().await?.context("own device missing")?;
    // Its own device's keys, as the SDK holds them, are from before the bootstrap (it learns of the
    // new signature at its next key query), so only its local trust is reported.
    emit(json!({ "step": "own_device", "verified": own.is_verified() }));
    Ok(())
}

/// A latest event as the tests read it.
fn latest_json(value: &LatestEventValue) -> Value {
    match value {
        LatestEventValue::Remote(event) => {
            let raw: Value = serde_json::from_str(event.raw().json().get()).unwrap_or(Value::Null);
            json!({
                "event_id": raw["event_id"],
                "type": raw["type"],
                "sender": raw["sender"],
                "body": raw["content"]["body"],
            })
        }
        LatestEventValue::RemoteInvite { inviter, .. } => json!({ "invite_from": inviter.as_ref().map(|u| u.to_string()) }),
        _ => Value::Null,
    }
}

/// The room's display name once the SDK has worked it out from the state it holds. The room list
/// shows a response's rooms as soon as it is saved, but matrix-sdk-base computes their display
/// names only after that (`display_name::update_for_rooms`), so for a moment a room can still
/// carry the name cached when it was created: "Empty Room".
async fn settled_display_name(room: &Room) -> Option<String> {
    let deadline = tokio::time::Instant::now() + GIVE_UP;
    loop {
        let name = room.display_name().await.ok();
        let settled = match (&name, room.name()) {
            (Some(shown), Some(named)) => shown.to_string() == named.trim(),
            (Some(shown), None) => !matches!(shown, RoomDisplayName::Empty),
            (None, _) => false,
        };
        if settled || tokio::time::Instant::now() >= deadline {
            return name.map(|n| n.to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn describe(room: &Room, latest: &LatestEventValue) -> Value {
    let name = settled_display_name(room).await;
    // An invite's latest event, as the SDK's latest-event builder makes it: who invited, from the stripped state.
    let latest = match (room.state(), latest) {
        (RoomState::Invited, LatestEventValue::None) => match room.invite_details().await {
            Ok(invite) => json!({ "invite_from": invite.inviter_id.to_string() }),
            Err(_) => Value::Null,
        },
        _ => latest_json(latest),
    };
    json!({
        "step": "room",
        "room_id": room.room_id().to_string(),
        "state": format!("{:?}", room.state()),
        "name": name,
        // The m.room.name the client holds, beside the name it shows, for a failure's message.
        "state_name": room.name(),
        "latest": latest,
        "active_call": room.has_active_room_call(),
    })
}

/// A running sync whose room list is fully loaded.
struct Synced {
    sync: SyncService,
    /// The room count the server reported (`RoomListLoadingState::Loaded`).
    maximum: u32,
    /// The room list's entries once it holds that many, in its order.
    rooms: Vec<Room>,
}

/// Larger than any room list of the tests, so that one page shows the whole list.
const PAGE_SIZE: usize = 1000;

/// Starts sync as Element X does, and waits until the room list is fully loaded.
async fn start_sync(client: &Client) -> Result<Synced> {
    let sync = SyncService::builder(client.clone()).with_share_pos(true).build().await?;
    sync.start().await;
    let room_list_service = sync.room_list_service();
    let all_rooms = room_list_service.all_rooms().await?;
    // The list's first request covers [0, 19], then it grows in batches of 100; `Running` only says
    // that a growing response came, not that the list holds every room (past 100 it does not), so
    // wait for the count the server gives with `Loaded`, then for the list to hold that many.
    let mut loading = all_rooms.loading_state();
    let maximum = tokio::time::timeout(GIVE_UP, async {
        loop {
            if let RoomListLoadingState::Loaded { maximum_number_of_rooms: Some(maximum) } = loading.get() {
                return maximum;
            }
            loading.next().await;
        }
    })
    .await
    .context("waiting for the room list's count")?;
    // The list as Element X shows it (left rooms filtered out), until it holds every room counted.
    let (entries, controller) = all_rooms.entries_with_dynamic_adapters(PAGE_SIZE);
    controller.set_filter(Box::new(new_filter_non_left()));
    let mut entries = std::pin::pin!(entries);
    let mut list = Vector::new();
    tokio::time::timeout(GIVE_UP, async {
        while list.len() < maximum as usize {
            for diff in entries.next().await.context("the room list's entries ended")? {
                diff.apply(&mut list);
            }
        }
        anyhow::Ok(())
    })
    .await
    .context("waiting for the room list to be fully loaded")??;
    let rooms = list.into_iter().map(RoomListItem::into_inner).collect();
    Ok(Synced { sync, maximum, rooms })
}

/// Blocks until the test closes stdin.
async fn until_stdin_closes() -> Result<()> {
    tokio::task::spawn_blocking(|| std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())).await??;
    Ok(())
}

/// Reports the room list; see the module comment.
async fn rooms(client: &Client) -> Result<()> {
    let Synced { sync, maximum, rooms } = start_sync(client).await?;

    let latest_events = client.latest_events().await;
    let mut watched = Vec::new();
    for room in rooms {
        let mut latest = latest_events
            .listen_and_subscribe_to_room(room.room_id())
            .await?
            .context("a room of the list is unknown to latest events")?;
        // The latest event of a joined room is computed in the background from the event cache.
        // An invite's is computed only when its membership changes, which may have happened
        // before this subscription: `describe` reads the invite from its stripped state instead.
        let joined = room.state() == RoomState::Joined;
        let _ = tokio::time::timeout(if joined { GIVE_UP } else { Duration::ZERO }, async {
            while matches!(latest.get().await, LatestEventValue::None) {
                latest.next().await;
            }
        })
        .await;
        emit(describe(&room, &latest.get().await).await);
        watched.push((room, latest));
    }
    emit(json!({ "step": "ready", "count": client.rooms().len(), "maximum": maximum }));

    for (room, mut latest) in watched {
        tokio::spawn(async move {
            while let Some(value) = latest.next().await {
                let mut line = describe(&room, &value).await;
                line["step"] = json!("update");
                emit(line);
            }
        });
    }
    until_stdin_closes().await?;
    sync.stop().await;
    Ok(())
}

/// Exchanges messages in a room; see the module comment.
async fn chat(client: &Client, room_id: &str, text: &str) -> Result<()> {
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    client.add_event_handler(|event: OriginalSyncRoomMessageEvent, room: Room, encryption: Option<EncryptionInfo>| async move {
        emit(json!({
            "step": "message",
            "room_id": room.room_id().to_string(),
            "event_id": event.event_id.to_string(),
            "sender": event.sender.to_string(),
            "body": event.content.body(),
            "encrypted": encryption.is_some(),
        }));
    });
    let Synced { sync, .. } = start_sync(client).await?;
    let room = client.get_room(&RoomId::parse(room_id)?).context("the room is not in the room list")?;
    let sent = room.send(RoomMessageEventContent::text_plain(text)).await?;
    emit(json!({ "step": "sent", "event_id": sent.response.event_id.to_string() }));
    until_stdin_closes().await?;
    // Room keys are backed up in the background; finish before exiting.
    client.encryption().backups().wait_for_steady_state().await?;
    emit(json!({ "step": "backed_up" }));
    sync.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, homeserver, user, password, extra @ ..] = args.as_slice() else {
        bail!("usage: switchboard-rust-client e2ee|rooms|chat <homeserver URL> <user> <password> [<room ID> <text>]");
    };
    match mode.as_str() {
        "chat" => {
            let [room_id, text] = extra else { bail!("chat needs <room ID> <text>") };
            let client = login(homeserver, user, password, true).await?;
            chat(&client, room_id, text).await?;
        }
        "e2ee" => {
            let client = login(homeserver, user, password, false).await?;
            e2ee(&client).await?;
        }
        "rooms" => {
            let client = login(homeserver, user, password, true).await?;
            rooms(&client).await?;
        }
        other => bail!("unknown mode {other}"),
    }
    emit(json!({ "step": "done" }));
    Ok(())
}
