use super::server::{go_time, health_reply};
use super::*;
use axum::http::StatusCode;
use IpFamily::{V4, V6};

const TIMEOUT: Duration = Duration::from_secs(60);

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn json(health: &ProxyHealth, healthz: bool) -> (StatusCode, serde_json::Value) {
    let (code, body) = health_reply(health, healthz);
    (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

#[test]
fn healthy_at_start_and_while_nothing_is_pending() {
    let h = HealthState::new(TIMEOUT);
    assert!(h.health(at(0)).healthy);
    assert!(h.health(at(0)).families.is_empty());
    h.updated(V4, at(5));
    assert!(h.health(at(10_000)).healthy, "idle after a sync stays healthy");
    assert_eq!(h.health(at(10_000)).last_updated, Some(at(5)));
}

#[test]
fn pending_change_turns_unhealthy_after_timeout() {
    let h = HealthState::new(TIMEOUT);
    h.updated(V4, at(0));
    h.queued(V4, at(100));
    h.queued(V4, at(150));
    assert!(h.health(at(159)).healthy, "59 s pending: not late yet");
    assert!(!h.health(at(160)).healthy, "60 s pending: late (the later queue did not reset the clock)");
    h.updated(V4, at(161));
    assert!(h.health(at(500)).healthy, "a successful sync clears the pending change");
}

#[test]
fn staleness_is_tracked_per_family() {
    let h = HealthState::new(TIMEOUT);
    h.updated(V4, at(0));
    h.updated(V6, at(1));
    h.queued(V4, at(10));
    h.queued(V6, at(10));
    h.updated(V4, at(20));
    let s = h.health(at(70));
    assert!(!s.healthy, "IPv6 is still pending after 60 s");
    assert_eq!(s.families[&V4], FamilyHealth { last_updated: Some(at(20)), healthy: true });
    assert_eq!(s.families[&V6], FamilyHealth { last_updated: Some(at(1)), healthy: false });
    assert_eq!(s.last_updated, Some(at(20)), "the most recent sync of any family");
    h.updated(V6, at(71));
    assert!(h.health(at(72)).healthy);
}

#[test]
fn stuck_before_the_first_sync_is_unhealthy() {
    let h = HealthState::new(TIMEOUT);
    h.queued(V4, at(0));
    let s = h.health(at(120));
    assert!(!s.healthy);
    assert_eq!(s.last_updated, None);
    let (code, body) = json(&s, false);
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["lastUpdated"], "0001-01-01T00:00:00Z");
    assert_eq!(body["status"]["IPv4"]["healthy"], false);
}

#[test]
fn clock_stepping_back_is_not_late() {
    let h = HealthState::new(TIMEOUT);
    h.queued(V4, at(100));
    assert!(h.health(at(0)).healthy);
}

#[test]
fn go_time_matches_go_json() {
    assert_eq!(go_time(Some(at(0))), "2023-11-14T22:13:20Z");
    assert_eq!(go_time(Some(at(0) + Duration::from_millis(500))), "2023-11-14T22:13:20.5Z");
    assert_eq!(go_time(Some(at(0) + Duration::from_nanos(1_230))), "2023-11-14T22:13:20.00000123Z");
    assert_eq!(go_time(None), "0001-01-01T00:00:00Z");
}

#[test]
fn healthz_body_has_kube_proxys_shape() {
    let h = HealthState::new(TIMEOUT);
    h.updated(V6, at(3));
    h.updated(V4, at(1));
    let (code, body) = health_reply(&h.health(at(9)), true);
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        concat!(
            r#"{"lastUpdated":"2023-11-14T22:13:29Z","currentTime":"2023-11-14T22:13:29Z","nodeEligible":true,"#,
            r#""healthy":true,"status":{"IPv4":{"lastUpdated":"2023-11-14T22:13:21Z","healthy":true},"#,
            r#""IPv6":{"lastUpdated":"2023-11-14T22:13:23Z","healthy":true}}}"#
        )
    );
    let (_, livez) = health_reply(&h.health(at(9)), false);
    assert!(!livez.contains("nodeEligible"), "{livez}");
    let (_, empty) = health_reply(&HealthState::new(TIMEOUT).health(at(0)), false);
    assert_eq!(empty, r#"{"lastUpdated":"2023-11-14T22:13:20Z","currentTime":"2023-11-14T22:13:20Z","healthy":true}"#);
}

#[test]
fn unhealthy_body_reports_the_last_sync_not_now() {
    let h = HealthState::new(TIMEOUT);
    h.updated(V4, at(5));
    h.queued(V4, at(10));
    let (code, body) = json(&h.health(at(100)), true);
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["lastUpdated"], "2023-11-14T22:13:25Z");
    assert_eq!(body["currentTime"], "2023-11-14T22:15:00Z");
    assert_eq!(body["healthy"], false);
}

#[test]
fn node_eligibility_fails_healthz_only() {
    let h = HealthState::new(TIMEOUT);
    h.updated(V4, at(1));
    h.set_node_eligible(false);
    let s = h.health(at(2));
    assert!(s.healthy && !s.node_eligible);
    let (code, body) = json(&s, true);
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((body["nodeEligible"].as_bool(), body["healthy"].as_bool()), (Some(false), Some(true)));
    assert_eq!(body["lastUpdated"], "2023-11-14T22:13:21Z", "not healthy: the last sync, not now");
    assert_eq!(json(&s, false).0, StatusCode::OK, "livez ignores node eligibility");
    h.set_node_eligible(true);
    assert_eq!(json(&h.health(at(3)), true).0, StatusCode::OK);
}

#[test]
fn injected_clock_drives_is_healthy() {
    let now = Arc::new(Mutex::new(at(0)));
    let clock_now = now.clone();
    let h = HealthState::new(TIMEOUT).with_clock(Arc::new(move || *clock_now.lock().unwrap()));
    h.queued(V6, at(0));
    assert!(h.is_healthy());
    *now.lock().unwrap() = at(61);
    assert!(!h.is_healthy());
}
