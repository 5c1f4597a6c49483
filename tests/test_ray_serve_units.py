"""sigserve.integrations.ray_serve without a Ray cluster: how `serve run ...:app key=value` arguments
become sigserve's options and Ray Serve's, the gRPC services the proxy registers, and the shipped
Serve config. The replicas themselves, on a real Ray: test_ray_serve.py."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

rs = pytest.importorskip("sigserve.integrations.ray_serve")

from sigserve.errors import SigserveError  # noqa: E402
from sigserve.protos import MODEL_SERVICE, PREDICTION_SERVICE  # noqa: E402
from sigserve.server.grpc_methods import method_table  # noqa: E402
from sigserve.server.options import ServerOptions  # noqa: E402
from tests.deploy_files import DEPLOY, load_yaml  # noqa: E402


def bound(application: Any) -> Any:
    return application._bound_deployment


def test_servicer_functions_register_every_tf_serving_method() -> None:
    class Anything:  # method_table only takes the bodies' references (and guards them); none runs here
        def __getattr__(self, name: str) -> Any:
            return self

        def __call__(self, *args: Any) -> Any:
            return self

    table = method_table(Anything())  # type: ignore[arg-type]
    assert rs.PREDICTION_METHODS == tuple(table[PREDICTION_SERVICE])
    assert rs.MODEL_METHODS == tuple(table[MODEL_SERVICE])
    for name in rs.PREDICTION_METHODS + rs.MODEL_METHODS:
        assert callable(getattr(rs.SigserveReplica, name))

    class Server:
        def __init__(self) -> None:
            self.handlers: list[Any] = []

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            self.handlers.extend(handlers)

    server = Server()
    rs.add_PredictionServiceServicer_to_server(None, server)
    rs.add_ModelServiceServicer_to_server(None, server)
    paths = {path for h in server.handlers for path in h._method_handlers}
    assert paths == {f"/{PREDICTION_SERVICE}/{m}" for m in rs.PREDICTION_METHODS} | {
        f"/{MODEL_SERVICE}/{m}" for m in rs.MODEL_METHODS
    }
    for h in server.handlers:
        for handler in h._method_handlers.values():
            # Raw bytes both ways: the proxy never parses a TF Serving message.
            assert handler.request_deserializer is None and handler.response_serializer is None
            assert isinstance(handler, grpc.RpcMethodHandler)


def test_app_arguments_are_sigserve_flags_and_serve_options() -> None:
    application = rs.app(
        {
            "model_name": "m",
            "--model_base_path": "/models/m",  # `serve run ... -- --flag=value` keeps the dashes
            "enable_batching": "true",
            "rest_api_timeout_in_ms": 60000,  # a Serve config's args may be YAML numbers
            "num_replicas": "2",
            "num_cpus": "0.5",
            "max_ongoing_requests": "64",
        }
    )
    d = bound(application)
    (options,) = d.init_args
    assert isinstance(options, ServerOptions)
    assert (options.model_name, options.model_base_path) == ("m", "/models/m")
    assert options.enable_batching is True and options.rest_api_timeout_in_ms == 60000
    assert options.tensorflow_session_parallelism == 1  # one CPU's worth (0.5, rounded up) per replica
    assert (d.num_replicas, d.ray_actor_options["num_cpus"], d.max_ongoing_requests) == (2, 0.5, 64)

    autoscaled = bound(rs.app({"model_base_path": "/m", "min_replicas": "1", "max_replicas": "4"}))
    assert autoscaled._deployment_config.autoscaling_config.max_replicas == 4
    explicit = bound(rs.app({"model_base_path": "/m", "tensorflow_intra_op_parallelism": "3"}))
    assert explicit.init_args[0].tensorflow_session_parallelism == 0  # the flags' choice stands


@pytest.mark.parametrize(
    "args, message",
    [
        ({"model_base_path": "/m", "no_such_flag": "1"}, "unknown no_such_flag"),
        ({"model_base_path": "/m", "enable_batching": "maybe"}, "expected true or false"),
        ({"model_base_path": "/m", "num_replicas": "2", "max_replicas": "3"}, "not both"),
        ({"model_base_path": "/m", "num_replicas": "two"}, "Bad Ray Serve option"),
        ({"model_name": "m"}, "model_base_path and server_options.model_config_file are empty"),
        ({"model_config_file": "/no/such/file"}, "Could not read --model_config_file"),
    ],
)
def test_bad_app_arguments_fail_in_the_driver(args: dict[str, str], message: str) -> None:
    with pytest.raises(SigserveError) as e:
        rs.app(args)
    assert message in e.value.message


def test_the_shipped_serve_config_is_valid() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = load_yaml(DEPLOY / "ray" / "serve.yaml")
    schema = (
        ServeDeploySchema.model_validate(config) if hasattr(ServeDeploySchema, "model_validate") else None
    )
    assert schema is not None
    assert config["grpc_options"]["grpc_servicer_functions"] == rs.GRPC_SERVICER_FUNCTIONS
    assert (config["http_options"]["port"], config["grpc_options"]["port"]) == (8501, 8500)
    (application,) = config["applications"]
    assert application["import_path"] == "sigserve.integrations.ray_serve:app"
    d = bound(rs.app(application["args"]))
    assert d.init_args[0].model_base_path == "/models/half_plus_two"
    assert d._deployment_config.autoscaling_config.min_replicas == 1


def test_wire_message_is_what_ray_serializes() -> None:
    assert rs.WireMessage(b"\x08\x01").SerializeToString() == b"\x08\x01"
