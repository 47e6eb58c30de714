use super::*;
use crate::instances::fixtures::spec;
use std::time::{Duration, UNIX_EPOCH};

#[test]
fn spec_round_trips() {
    let full = spec("pg-1");
    assert_eq!(spec_from_proto(Some(spec_to_proto(&full))).unwrap(), full);

    let mut other = spec("pg-1");
    other.engine = Engine::Redis;
    other.plan.name = PlanName::Business;
    other.volume.device = Some("/dev/vdb".into());
    other.volume.filesystem = Filesystem::Xfs;
    other.maintenance_window = None;
    other.backup_policy = None;
    other.log_sources.clear();
    let pb = spec_to_proto(&other);
    assert_eq!(pb.volume.as_ref().unwrap().device, "/dev/vdb");
    assert_eq!(spec_from_proto(Some(pb)).unwrap(), other);

    for day in [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ] {
        assert_eq!(weekday_from_proto("w", weekday_to_proto(day) as i32).unwrap(), day);
    }
}

#[test]
fn instance_to_proto() {
    let instance = Instance {
        id: "pg-1".to_owned(),
        spec: spec("pg-1"),
        created: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        updated: UNIX_EPOCH + Duration::from_secs(1_700_000_100),
        generation: 3,
    };
    let pb = pb::Instance::from(&instance);
    assert_eq!(pb.id, "pg-1");
    assert_eq!(pb.generation, 3);
    assert_eq!(pb.created, Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_000_000 }));
    assert_eq!(pb.updated.map(|t| t.seconds), Some(1_700_000_100));
    assert_eq!(spec_from_proto(pb.spec).unwrap(), instance.spec);
}

fn field_of(change: impl FnOnce(&mut pb::InstanceSpec)) -> String {
    let mut pb = spec_to_proto(&spec("pg-1"));
    change(&mut pb);
    spec_from_proto(Some(pb)).unwrap_err().field
}

#[test]
fn refuses_missing_and_unknown_values() {
    assert_eq!(spec_from_proto(None).unwrap_err().field, "spec");
    assert_eq!(field_of(|s| s.volume = None), "spec.volume");
    assert_eq!(field_of(|s| s.plan = None), "spec.plan");
    assert_eq!(field_of(|s| s.engine = pb::Engine::Unspecified as i32), "spec.engine");
    assert_eq!(field_of(|s| s.engine = 42), "spec.engine");
    assert_eq!(field_of(|s| s.plan.as_mut().unwrap().name = 0), "spec.plan.name");
    assert_eq!(field_of(|s| s.plan.as_mut().unwrap().name = 9), "spec.plan.name");
    assert_eq!(field_of(|s| s.maintenance_window.as_mut().unwrap().weekday = 0), "spec.maintenance_window.weekday");
    assert_eq!(field_of(|s| s.maintenance_window.as_mut().unwrap().weekday = 8), "spec.maintenance_window.weekday");
    assert_eq!(field_of(|s| s.volume.as_mut().unwrap().filesystem = "btrfs".to_owned()), "spec.volume.filesystem");
    assert_eq!(field_of(|s| s.log_sources[1].source = None), "spec.log_sources[1]");
}

#[test]
fn defaults_for_empty_strings() {
    let mut pb = spec_to_proto(&spec("pg-1"));
    let volume = pb.volume.as_mut().unwrap();
    volume.filesystem = String::new();
    volume.device = String::new();
    let domain = spec_from_proto(Some(pb)).unwrap();
    assert_eq!(domain.volume.filesystem, Filesystem::Ext4);
    assert_eq!(domain.volume.device, None);
}
