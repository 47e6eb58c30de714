//! gRPC reflection against the real binary over mutual TLS: both protocol versions list exactly the
//! services the agent serves (never KeyService, which it only calls), for both roles, and resolve a
//! served symbol to its file.

use dbagent_integration::Agent;
use prost::Message;
use prost_types::FileDescriptorProto;

/// What the agent serves; reflection must list these and nothing else.
const SERVED: &[&str] = &[
    "dbagent.v1.Agent",
    "dbagent.v1.Backups",
    "dbagent.v1.Instances",
    "dbagent.v1.Logs",
    "dbagent.v1.Metrics",
    "dbagent.v1.Operations",
    "dbagent.v1.Upgrades",
    "dbagent.v1.Volumes",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The same client for each protocol version: the two differ only in their package.
macro_rules! reflection_client {
    ($version:ident) => {
        mod $version {
            use super::*;
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use tonic::transport::Channel;
            use tonic_reflection::pb::$version as pb;

            /// One request on a fresh stream. tonic-reflection answers a lookup that fails with a status on
            /// the stream rather than an ErrorResponse; both come back as `Err`.
            async fn ask(channel: Channel, request: MessageRequest) -> Result<MessageResponse, tonic::Code> {
                let mut client = pb::server_reflection_client::ServerReflectionClient::new(channel);
                let request = pb::ServerReflectionRequest { host: String::new(), message_request: Some(request) };
                let mut answers = client
                    .server_reflection_info(tokio_stream::iter([request]))
                    .await
                    .unwrap_or_else(|s| panic!("{} reflection refused: {s:?}", stringify!($version)))
                    .into_inner();
                let answer = answers.message().await.map_err(|s| s.code())?.expect("not the end of the stream");
                match answer.message_response.expect("an answer with a response") {
                    MessageResponse::ErrorResponse(e) => Err(tonic::Code::from_i32(e.error_code)),
                    response => Ok(response),
                }
            }

            pub async fn list_services(channel: Channel) -> Vec<String> {
                match ask(channel, MessageRequest::ListServices(String::new())).await {
                    Ok(MessageResponse::ListServicesResponse(list)) => {
                        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                        names.sort();
                        names
                    }
                    other => panic!("expected a service list, got {other:?}"),
                }
            }

            /// The files that describe `symbol`, or the code of the failed lookup.
            pub async fn file_containing_symbol(
                channel: Channel,
                symbol: &str,
            ) -> Result<Vec<FileDescriptorProto>, tonic::Code> {
                files(channel, MessageRequest::FileContainingSymbol(symbol.to_owned())).await
            }

            /// The file named `name` (as an import names it), or the error code.
            pub async fn file_by_filename(
                channel: Channel,
                name: &str,
            ) -> Result<Vec<FileDescriptorProto>, tonic::Code> {
                files(channel, MessageRequest::FileByFilename(name.to_owned())).await
            }

            async fn files(channel: Channel, request: MessageRequest) -> Result<Vec<FileDescriptorProto>, tonic::Code> {
                match ask(channel, request).await? {
                    MessageResponse::FileDescriptorResponse(files) => Ok(files
                        .file_descriptor_proto
                        .iter()
                        .map(|raw| FileDescriptorProto::decode(raw.as_slice()).expect("a valid file descriptor"))
                        .collect()),
                    other => panic!("expected files or an error, got {other:?}"),
                }
            }
        }
    };
}
reflection_client!(v1);
reflection_client!(v1alpha);

#[tokio::test]
async fn both_versions_list_exactly_the_served_services_to_both_roles() {
    let agent = Agent::start_dev();
    for channel in [agent.orchestrator().await, agent.monitor().await] {
        for (version, listed) in
            [("v1", v1::list_services(channel.clone()).await), ("v1alpha", v1alpha::list_services(channel).await)]
        {
            assert_eq!(listed, SERVED, "{version}");
            assert!(!listed.iter().any(|s| s.ends_with(".KeyService")), "{version} lists KeyService: {listed:?}");
        }
    }
}

/// The `Volumes` service in the files reflection returned, with its methods.
fn volumes_methods(files: &[FileDescriptorProto]) -> Vec<String> {
    let file = files.first().expect("the file containing the symbol comes first");
    assert_eq!(file.package(), "dbagent.v1");
    let volumes = file.service.iter().find(|s| s.name() == "Volumes").expect("the Volumes service in its file");
    volumes.method.iter().map(|m| m.name().to_owned()).collect()
}

#[tokio::test]
async fn a_served_symbol_resolves_and_an_unserved_one_does_not() {
    const NOT_FOUND: tonic::Code = tonic::Code::NotFound;
    let agent = Agent::start_dev();
    let channel = agent.monitor().await;

    let files = v1::file_containing_symbol(channel.clone(), "dbagent.v1.Volumes").await.expect("v1 resolves Volumes");
    assert!(volumes_methods(&files).iter().any(|m| m == "CreateVolume"), "{files:?}");
    let files = v1alpha::file_containing_symbol(channel.clone(), "dbagent.v1.Volumes.CreateVolume")
        .await
        .expect("v1alpha resolves a method of Volumes");
    assert!(volumes_methods(&files).iter().any(|m| m == "CreateVolume"), "{files:?}");
    // A client fetches the imports by name to decode the messages: the whole closure must resolve.
    let mut pending = files[0].dependency.clone();
    let mut resolved: Vec<String> = Vec::new();
    while let Some(import) = pending.pop() {
        if resolved.contains(&import) {
            continue;
        }
        let found = v1alpha::file_by_filename(channel.clone(), &import).await;
        let file = found.unwrap_or_else(|code| panic!("{import} does not resolve: {code:?}")).remove(0);
        assert_eq!(file.name(), import);
        assert!(v1::file_by_filename(channel.clone(), &import).await.is_ok(), "{import} does not resolve in v1");
        pending.extend(file.dependency);
        resolved.push(import);
    }
    for import in ["dbagent/v1/operations.proto", "google/protobuf/timestamp.proto"] {
        assert!(resolved.iter().any(|r| r == import), "{import} not among the imports {resolved:?}");
    }

    // Upgrades is served (SetMaintenanceWindow), so it resolves; KeyService the agent only calls.
    assert!(v1::file_containing_symbol(channel.clone(), "dbagent.v1.Upgrades").await.is_ok(), "v1 Upgrades");
    for symbol in ["dbagent.v1.KeyService"] {
        assert_eq!(v1::file_containing_symbol(channel.clone(), symbol).await.err(), Some(NOT_FOUND), "v1 {symbol}");
        assert_eq!(
            v1alpha::file_containing_symbol(channel.clone(), symbol).await.err(),
            Some(NOT_FOUND),
            "v1alpha {symbol}"
        );
    }
}
