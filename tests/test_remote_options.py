"""``@remote``, ``.options()``, ``@method`` and the API calls, checked against a fake runtime."""

from __future__ import annotations

import asyncio
import pickle
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from _fake_runtime import FakeRuntime

import detray as ray
from detray import options as opts
from detray import runtime, settings
from detray.core import ids, specs
from detray.core.resources import UNIT, ResourceError
from detray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)


@pytest.fixture
def fake() -> Iterator[FakeRuntime]:
    installed = FakeRuntime()
    previous = runtime.set_current(installed)
    yield installed
    runtime.set_current(previous)


@pytest.fixture
def no_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    previous = runtime.set_current(None)
    monkeypatch.delenv(settings.MODE_ENV, raising=False)
    monkeypatch.delenv(settings.SEED_ENV, raising=False)
    yield
    runtime.set_current(previous)


def square(x: int) -> int:
    return x * x


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def add(self, n: int = 1) -> int:
        self.value += n
        return self.value

    @ray.method(num_returns=2)
    def pair(self) -> tuple[int, int]:
        return self.value, -self.value


# --- validation --------------------------------------------------------------------------------


def test_an_unknown_option_names_the_option_and_the_function() -> None:
    with pytest.raises(ValueError, match=r"'num_cpu'.*remote function square\(\)"):
        ray.remote(num_cpu=1)(square)


def test_an_unknown_option_of_an_actor_names_the_class() -> None:
    with pytest.raises(ValueError, match=r"'num_returns'.*actor class Counter"):
        ray.remote(num_returns=2)(Counter)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("num_cpus", "2"),
        ("num_gpus", [1]),
        ("max_retries", 1.5),
        ("max_retries", True),
        ("resources", [("foo", 1)]),
        ("retry_exceptions", "ValueError"),
        ("scheduling_strategy", 3),
    ],
)
def test_a_wrong_type_is_a_type_error_naming_the_option_and_the_function(
    option: str, value: Any
) -> None:
    with pytest.raises(TypeError, match=rf"remote function square\(\).*'{option}'"):
        ray.remote(**{option: value})(square)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"num_cpus": -1}, "'CPU'"),
        ({"num_gpus": 1.5}, "'GPU'"),
        ({"num_cpus": 0.00001}, "'CPU'"),
        ({"resources": {"accelerator": -2}}, "'accelerator'"),
        ({"resources": {"accelerator": float("nan")}}, "'accelerator'"),
        ({"memory": float("inf")}, "'memory'"),
    ],
)
def test_a_bad_resource_quantity_is_a_value_error_naming_the_resource(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=rf"remote function square\(\).*{named}") as caught:
        ray.remote(**options)(square)
    assert isinstance(caught.value, ResourceError)


def test_cpu_and_gpu_belong_in_num_cpus_and_num_gpus_not_resources() -> None:
    with pytest.raises(ValueError, match="num_cpus"):
        ray.remote(resources={"CPU": 1})(square)


@pytest.mark.parametrize(
    "options",
    [{"max_retries": -2}, {"num_returns": -1}, {"max_calls": -1}, {"lifetime": "forever"}],
)
def test_bad_values_are_value_errors(options: dict[str, Any]) -> None:
    target = Counter if "lifetime" in options else square
    with pytest.raises(ValueError):
        ray.remote(**options)(target)


def test_get_if_exists_needs_a_name() -> None:
    with pytest.raises(ValueError, match="name must be specified"):
        ray.remote(get_if_exists=True)(Counter)


def test_max_calls_cannot_be_set_in_options() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        ray.remote(square).options(max_calls=2)


def test_remote_must_decorate_a_function_or_a_class() -> None:
    with pytest.raises(TypeError, match="function or a class"):
        ray.remote(len)
    with pytest.raises(TypeError, match="keyword options"):
        ray.remote(square, num_cpus=1)


# --- what is not supported ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"placement_group": object()},
        {"accelerator_type": "A100"},
        {"runtime_env": {"pip": ["requests"]}},
        {"num_returns": "streaming"},
    ],
)
def test_unsupported_options_raise_not_implemented_naming_them(options: dict[str, Any]) -> None:
    with pytest.raises(NotImplementedError) as caught:
        ray.remote(**options)(square)
    assert "square" in str(caught.value)


def test_neutral_values_of_unsupported_options_are_accepted() -> None:
    ray.remote(placement_group=None, placement_group_bundle_index=-1)(square)
    ray.remote(runtime_env={"env_vars": {"MODE": "fast"}})(square)


def test_concurrency_groups_of_actors_are_not_supported() -> None:
    with pytest.raises(NotImplementedError, match="concurrency_groups"):
        ray.remote(concurrency_groups={"io": 2})(Counter)


def test_placement_group_strategies_are_not_supported() -> None:
    with pytest.raises(NotImplementedError, match="placement groups"):
        PlacementGroupSchedulingStrategy(None)


def test_unsupported_top_level_apis_raise_not_implemented_and_are_not_attributes() -> None:
    assert not hasattr(ray, "timeline")
    with pytest.raises(NotImplementedError, match="timeline"):
        ray.timeline  # noqa: B018
    with pytest.raises(NotImplementedError, match="placement groups"):
        ray.util.placement_group([{"CPU": 1}])


# --- direct calls ---------------------------------------------------------------------------------------


def test_calling_a_remote_function_directly_tells_to_use_remote() -> None:
    with pytest.raises(TypeError, match=r"try 'square\.remote\(\)'"):
        ray.remote(square)(3)


def test_instantiating_an_actor_class_directly_tells_to_use_remote() -> None:
    with pytest.raises(TypeError, match=r"use 'Counter\.remote\(\)'"):
        ray.remote(Counter)()


def test_calling_an_actor_method_directly_tells_to_use_remote(fake: FakeRuntime) -> None:
    handle = ray.remote(Counter).remote()
    with pytest.raises(TypeError, match=r"try 'object\.add\.remote\(\)'"):
        handle.add(1)


def test_wrong_arguments_fail_at_the_call_site(fake: FakeRuntime) -> None:
    with pytest.raises(TypeError, match=r"square\(\)"):
        ray.remote(square).remote(1, 2)
    assert fake.submitted == []


# --- normal form: resources in fixed point, defaults ----------------------------------------------------------


def test_half_a_gpu_is_five_thousand_units_and_tasks_default_to_one_cpu(fake: FakeRuntime) -> None:
    ray.get(ray.remote(num_gpus=0.5)(square).remote(3))

    _, submitted = fake.submitted[0]
    assert submitted.resources == {"CPU": UNIT, "GPU": UNIT // 2}


def test_custom_resources_and_memory_convert_to_units() -> None:
    remote = ray.remote(num_cpus=0.25, resources={"disk": 2}, memory=1024)(square)

    assert remote._options.resources == {"CPU": 2500, "disk": 2 * UNIT, "memory": 1024 * UNIT}


def test_zero_cpus_take_no_cpu() -> None:
    assert ray.remote(num_cpus=0)(square)._options.resources == {}


def test_an_actor_without_resources_needs_one_cpu_to_place_and_holds_none() -> None:
    actor = ray.remote(Counter)._options

    assert actor.resources == {}
    assert actor.placement_resources == {"CPU": UNIT}


def test_an_actor_naming_a_gpu_holds_a_cpu_too_as_in_ray() -> None:
    actor = ray.remote(num_gpus=1)(Counter)._options

    assert actor.resources == {"CPU": UNIT, "GPU": UNIT}
    assert actor.placement_resources is None


def test_an_actor_with_num_cpus_holds_them() -> None:
    assert ray.remote(num_cpus=2)(Counter)._options.resources == {"CPU": 2 * UNIT}
    assert ray.remote(num_cpus=0)(Counter)._options.resources == {}
    assert ray.remote(num_cpus=0)(Counter)._options.placement_resources is None


def test_options_return_a_new_handle_and_leave_the_original_alone() -> None:
    original = ray.remote(num_cpus=2)(square)

    variant = original.options(num_gpus=1, name="sq")

    assert variant is not original
    assert original._options.resources == {"CPU": 2 * UNIT}
    assert variant._options.resources == {"CPU": 2 * UNIT, "GPU": UNIT}
    assert variant._options.name == "sq" and original._options.name == "square"


def test_scheduling_strategies_become_core_strategies() -> None:
    spread = ray.remote(scheduling_strategy="SPREAD")(square)._options.strategy
    hard = ray.remote(
        scheduling_strategy=NodeAffinitySchedulingStrategy(ids.node_id(3), soft=False)
    )(square)._options.strategy

    assert spread == specs.SpreadStrategy()
    assert hard == specs.NodeAffinityStrategy(node=ids.node_id(3), soft=False)
    with pytest.raises(ValueError, match="scheduling_strategy"):
        ray.remote(scheduling_strategy="PACK")(square)


def test_retry_exceptions_travel_as_qualified_names() -> None:
    task = ray.remote(max_retries=5, retry_exceptions=[ValueError, KeyError])(square)._options

    assert task.max_retries == 5
    assert task.retry_exceptions == ("builtins.ValueError", "builtins.KeyError")


def test_actor_options_normal_form() -> None:
    actor = ray.remote(Counter).options(
        name="c", namespace="ns", lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_task_retries=2, max_concurrency=4,
    )._options

    assert (actor.name, actor.namespace, actor.detached, actor.get_if_exists) == ("c", "ns", True, True)
    assert (actor.max_restarts, actor.max_task_retries, actor.max_concurrency) == (-1, 2, 4)


def test_async_actors_default_to_many_concurrent_calls() -> None:
    class Service:
        async def handle(self) -> int:
            return 1

    assert ray.remote(Service)._options.is_async
    assert ray.remote(Service)._options.max_concurrency == opts.DEFAULT_ASYNC_MAX_CONCURRENCY
    assert ray.remote(Counter)._options.max_concurrency == 1


def test_specs_are_built_from_the_normal_form() -> None:
    task = ray.remote(num_gpus=0.5, max_retries=1)(square)._options
    job = ids.job_id(1)
    task_id = ids.task_id(job, ids.driver_task_id(job), 1)

    spec = opts.task_spec(
        task, task_id=task_id, job_id=job, owner=ids.WorkerID("driver"),
        args=(), return_ids=(ids.return_object_id(task_id, 1),),
    )

    assert spec.resources == {"CPU": UNIT, "GPU": 5000} and spec.max_retries == 1
    assert spec.name == "square" and spec.kind is specs.TaskKind.NORMAL


def test_actor_specs_place_with_one_cpu_and_hold_none() -> None:
    actor = ray.remote(max_restarts=2)(Counter)._options
    job = ids.job_id(1)
    creation = ids.task_id(job, ids.driver_task_id(job), 1)

    spec = opts.actor_spec(
        actor, creation_task_id=creation, job_id=job, owner=ids.WorkerID("driver"),
        args=(), default_namespace="default",
    )

    assert spec.actor_id == ids.actor_id(creation)
    assert spec.creation.resources == {} and spec.creation.placement == {"CPU": UNIT}
    assert spec.creation.kind is specs.TaskKind.ACTOR_CREATION and spec.max_restarts == 2
    assert spec.namespace == "default"


# --- methods --------------------------------------------------------------------------------------------


def test_method_num_returns_gives_several_refs(fake: FakeRuntime) -> None:
    counter = ray.remote(Counter).remote(5)

    first, second = counter.pair.remote()

    assert ray.get([first, second]) == [5, -5]


def test_method_options_override_the_decorator(fake: FakeRuntime) -> None:
    counter = ray.remote(Counter).remote(2)

    refs = counter.add.options(num_returns=1, name="bump").remote(3)

    assert ray.get(refs) == 5


def test_method_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="num_return"):
        ray.method(num_return=2)


# --- the API over a fake runtime ---------------------------------------------------------------------------


def test_a_task_result_comes_back(fake: FakeRuntime) -> None:
    assert ray.get(ray.remote(square).remote(7)) == 49


def test_num_returns_shapes_the_result(fake: FakeRuntime) -> None:
    def three() -> tuple[int, int, int]:
        return 1, 2, 3

    def nothing() -> None:
        return None

    refs = ray.remote(num_returns=3)(three).remote()

    assert isinstance(refs, list) and ray.get(refs) == [1, 2, 3]
    assert ray.remote(num_returns=0)(nothing).remote() is None


def test_a_task_exception_is_caught_as_its_own_type(fake: FakeRuntime) -> None:
    def fail() -> None:
        raise KeyError("missing")

    ref = ray.remote(fail).remote()

    with pytest.raises(KeyError) as caught:
        ray.get(ref)
    assert isinstance(caught.value, ray.exceptions.RayTaskError)
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get([ray.put(1), ref])


def test_a_get_timeout_is_a_timeout_error(fake: FakeRuntime) -> None:
    ref = ray.remote(square).remote(2)
    fake.never_ready.add(ref.id)

    with pytest.raises(TimeoutError):
        ray.get(ref, timeout=0.1)


def test_get_checks_its_arguments(fake: FakeRuntime) -> None:
    with pytest.raises(ValueError, match="ObjectRef or a list"):
        ray.get((ray.put(1),))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an ObjectRef"):
        ray.get([1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="non-negative"):
        ray.get(ray.put(1), timeout=-1)


def test_put_refuses_a_ref(fake: FakeRuntime) -> None:
    with pytest.raises(TypeError, match="put"):
        ray.put(ray.put(1))


def test_wait_keeps_input_order_and_returns_at_most_num_returns(fake: FakeRuntime) -> None:
    refs = [ray.put(i) for i in range(4)]
    fake.never_ready.add(refs[1].id)

    ready, not_ready = ray.wait(refs, num_returns=2, timeout=0)

    assert ready == [refs[0], refs[2]]
    assert not_ready == [refs[1], refs[3]]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r: ray.wait(r[0]), TypeError),
        (lambda r: ray.wait([r[0], r[0]]), ValueError),
        (lambda r: ray.wait(r, num_returns=0), ValueError),
        (lambda r: ray.wait(r, num_returns=3), ValueError),
        (lambda r: ray.wait(r, timeout=-1), ValueError),
    ],
)
def test_wait_checks_its_arguments(fake: FakeRuntime, call: Any, error: type) -> None:
    with pytest.raises(error):
        call([ray.put(1), ray.put(2)])


def test_refs_can_be_awaited_and_turned_into_futures(fake: FakeRuntime) -> None:
    ref = ray.remote(square).remote(4)

    async def main() -> int:
        return await ref

    assert asyncio.run(main()) == 16
    assert ref.future().result() == 16


def test_awaiting_a_failed_ref_raises_the_task_error(fake: FakeRuntime) -> None:
    def fail() -> None:
        raise ValueError("nope")

    ref = ray.remote(fail).remote()

    async def main() -> None:
        await ref

    with pytest.raises(ValueError):
        asyncio.run(main())


def test_actor_handles_call_methods_and_pickle(fake: FakeRuntime) -> None:
    counter = ray.remote(Counter).remote(10)

    assert ray.get(counter.add.remote(5)) == 15
    assert repr(counter).startswith("Actor(Counter, A")
    copy = pickle.loads(pickle.dumps(counter))
    assert copy == counter and hash(copy) == hash(counter)
    assert ray.get(copy.add.remote()) == 16
    with pytest.raises(AttributeError, match="no method 'nope'"):
        counter.nope  # noqa: B018


def test_named_actors_are_found_and_reused(fake: FakeRuntime) -> None:
    first = ray.remote(Counter).options(name="shared", get_if_exists=True).remote(1)
    second = ray.remote(Counter).options(name="shared", get_if_exists=True).remote(100)

    assert first == second == ray.get_actor("shared")
    with pytest.raises(ValueError, match="Failed to look up actor with name 'other'"):
        ray.get_actor("other")


def test_kill_and_cancel_check_their_targets(fake: FakeRuntime) -> None:
    counter = ray.remote(Counter).remote()
    ref = ray.put(1)

    ray.kill(counter)
    ray.cancel(ref, force=True)

    assert fake.killed == [(counter.actor_id, True)]
    assert fake.cancelled == [(ref.id, True, True)]
    with pytest.raises(TypeError, match="kill"):
        ray.kill(ref)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cancel"):
        ray.cancel(counter)  # type: ignore[arg-type]


def test_a_remote_function_pickles(fake: FakeRuntime) -> None:
    remote = ray.remote(num_returns=1, max_retries=0)(square)

    copy = pickle.loads(pickle.dumps(remote))

    assert copy._options == remote._options
    assert ray.get(copy.remote(3)) == 9


# --- init -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "label"), [("real", "real runtime"), ("sim", "simulator")])
def test_init_names_a_driver_package_without_start(
    no_runtime: None, monkeypatch: pytest.MonkeyPatch, mode: str, label: str
) -> None:
    import importlib

    monkeypatch.delattr(importlib.import_module(f"detray.{mode}"), "start")
    with pytest.raises(NotImplementedError, match=rf"detray\.init\(mode='{mode}'\): the {label} is not built yet"):
        ray.init(mode=mode)


def test_an_unknown_mode_is_a_value_error(no_runtime: None) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        ray.init(mode="cloud")


def _fake_driver(monkeypatch: pytest.MonkeyPatch, name: str) -> FakeRuntime:
    started = FakeRuntime()
    module = types.ModuleType(name)

    def start(options: runtime.InitOptions) -> FakeRuntime:
        started.init_options = options
        return started

    module.start = start  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    return started


def test_detray_mode_sim_picks_the_simulator_with_the_seed_from_the_environment(
    no_runtime: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _fake_driver(monkeypatch, "detray.sim")
    monkeypatch.setenv(settings.MODE_ENV, "sim")
    monkeypatch.setenv(settings.SEED_ENV, "17")

    ray.init(redis_address="10.0.0.1:6379", num_cpus=4, runtime_env={"env_vars": {"A": "1"}},
             include_dashboard=False)

    options = started.init_options
    assert (options.mode, options.seed, options.address) == ("sim", 17, "10.0.0.1:6379")
    assert options.num_cpus == 4 and options.env_vars == {"A": "1"}
    assert options.extra == {"include_dashboard": False}
    assert ray.is_initialized()
    with pytest.raises(RuntimeError, match="twice"):
        ray.init()
    ray.init(ignore_reinit_error=True)
    ray.shutdown()
    assert not ray.is_initialized() and not started.initialized


def test_the_first_call_starts_a_runtime_as_ray_does(
    no_runtime: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _fake_driver(monkeypatch, "detray.real")

    assert ray.get(ray.remote(square).remote(5)) == 25
    assert runtime.current() is started
    ray.shutdown()


def test_auto_start_can_be_disabled(no_runtime: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.AUTO_CONNECT_ENV, "0")

    with pytest.raises(ray.exceptions.RaySystemError, match="init"):
        ray.put(1)


def test_cluster_queries_need_a_started_runtime(no_runtime: None) -> None:
    with pytest.raises(ray.exceptions.RaySystemError):
        ray.cluster_resources()


def test_cluster_queries_go_to_the_runtime(fake: FakeRuntime) -> None:
    assert ray.cluster_resources() == {"CPU": 4.0, "GPU": 1.0}
    assert ray.available_resources() == {"CPU": 3.0}
    assert ray.nodes()[0]["NodeID"] == ids.node_id(0)
    assert ray.get_runtime_context().get_job_id() == ids.job_id(1)
    assert ray.get_gpu_ids() == []


class Doubler:
    def __init__(self) -> None:
        self.calls = 0

    def double(self, value: int) -> int:
        self.calls += 1
        return 2 * value

    def count(self) -> int:
        return self.calls


def test_an_actor_pool_maps_in_order_over_all_its_actors(fake: FakeRuntime) -> None:
    actors = [ray.remote(Doubler).remote() for _ in range(2)]
    pool = ray.util.ActorPool(actors)

    ordered = list(pool.map(lambda actor, value: actor.double.remote(value), [1, 2, 3, 4]))
    unordered = set(pool.map_unordered(lambda actor, value: actor.double.remote(value), [5, 6]))

    assert ordered == [2, 4, 6, 8]
    assert unordered == {10, 12}
    assert all(ray.get(actor.count.remote()) > 0 for actor in actors)
    assert pool.has_free() and not pool.has_next()
