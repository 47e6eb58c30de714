//! RemoveInstance and a new registration of an id, against the real remainders: the volume record,
//! the keystore's keys and the operations engine.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{ErrorCode, HasErrorCode};
use crate::instances::RegistryError;
use crate::ops::{NewOperation, OpState, OperationEngine, OpsSettings};
use crate::volume::test_fixture::{Fixture, fixture};
use crate::volume::{KeyProvider, VolumeOutcome};

fn engine(f: &Fixture) -> OperationEngine {
    let settings = OpsSettings { max_concurrent: 2, retention: Duration::from_secs(60), max_finished: 10 };
    let locks = f.registry.locks().clone();
    OperationEngine::open(&f.dir.path().join("ops"), settings, locks, CancellationToken::new()).unwrap().0
}

fn remains(e: &RegistryError) -> String {
    assert!(matches!(e, RegistryError::Remains { .. }), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    e.to_string()
}

#[tokio::test]
async fn remove_instance_refuses_while_its_volume_keys_or_an_operation_remain() {
    let f = fixture();
    let engine = engine(&f);
    f.registry.set_leftovers(Arc::new(f.volumes.leftovers(engine.clone())));
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();

    let said = remains(&f.registry.remove("pg-1").await.unwrap_err());
    assert!(said.contains("pg-1.img (ready): destroy it with DestroyVolume"), "{said}");
    assert!(said.contains("its keys v1 in the local key provider: DestroyVolume forgets them"), "{said}");
    assert!(f.registry.get("pg-1").is_ok(), "still registered");

    // Destroyed, only a running operation on the instance remains.
    assert_eq!(f.volumes.destroy("pg-1").await.unwrap(), VolumeOutcome::Destroyed);
    let sleep = Duration::from_secs(60);
    let new = NewOperation {
        request_id: "r-sleep".into(),
        kind: crate::ops::sleep::KIND,
        target: "pg-1".into(),
        params: crate::ops::sleep::params(sleep),
        exclusive: true,
    };
    let (op, _) = engine.submit(new, crate::ops::sleep::job(sleep)).await.unwrap();
    engine.watch(&op.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
    let said = remains(&f.registry.remove("pg-1").await.unwrap_err());
    assert!(said.contains(&format!("operation {} (sleep, running)", op.id)), "{said}");
    assert!(!said.contains("volume") && !said.contains("keys"), "only the operation remains: {said}");

    engine.cancel(&op.id).await.unwrap();
    engine.watch(&op.id).unwrap().wait_for(|r| r.state.is_finished()).await.unwrap();
    // Nothing remains: the instance goes.
    f.registry.remove("pg-1").await.unwrap();
    assert!(f.registry.get("pg-1").is_err());
}

#[tokio::test]
async fn a_reused_id_never_inherits_the_old_instance_keys_or_volume() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    let old_key = f.keys.key("pg-1", 1, false, 256).await.unwrap();
    // As an agent before this check did: the registry entry went, the volume and keys stayed.
    f.registry.remove("pg-1").await.unwrap();

    f.registry.set_leftovers(Arc::new(f.volumes.leftovers(engine(&f))));
    let e = f.registry.register("pg-1", crate::instances::fixtures::spec("pg-1")).await.unwrap_err();
    let said = remains(&e);
    assert!(said.contains("cannot be registered again"), "{said}");
    assert!(said.contains("destroy it with DestroyVolume") && said.contains("its keys v1"), "{said}");
    assert!(f.registry.get("pg-1").is_err(), "not registered");

    // The old volume destroyed (keyslots erased, keys forgotten), the id starts from nothing.
    assert_eq!(f.volumes.destroy("pg-1").await.unwrap(), VolumeOutcome::Destroyed);
    f.register("pg-1", None).await;
    assert_eq!(f.volumes.create("pg-1", false).await.unwrap(), VolumeOutcome::Created, "a new volume, not the old one");
    let new_key = f.keys.key("pg-1", 1, false, 256).await.unwrap();
    assert_ne!(new_key.as_bytes(), old_key.as_bytes(), "a new key, not the old one");
}
