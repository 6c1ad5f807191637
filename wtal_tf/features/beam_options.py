"""Beam pipeline options of `wtal_tf.extract`: the pass-through arguments, checked before any work.

Every argument that is not a wtal_tf flag reaches `pipeline_options`, which
  * rejects an argument that is no Beam option either (e.g. a misspelt wtal_tf
    flag), and a bad value of a Beam option, as one UserError line;
  * knows the options of Beam's Dask runner (`--dask_client_address`,
    `--dask_npartitions`, ...; registered by importing its module, present
    with `apache-beam[dask]`);
  * resolves `--runner`: Beam's runner names (any case, "Flink" for
    "FlinkRunner"), `DaskRunner` (not among Beam's short names: mapped to
    its class path) or a class path; anything else is a UserError listing
    the accepted names;
  * defaults to the DirectRunner in multi_threading mode (DEFAULT_DIRECT_MODE)
    with one worker per core (`--direct_num_workers=0` is Beam's "one per core"
    too; negative is an error), and Beam's own logs at CRITICAL
    (`quiet_driver_logs` in the driver): a failed step reaches the driver as the
    run's exception. Worker threads share the driver's one TensorFlow and one
    Extractor: no worker imports TensorFlow or loads the weights again, and
    decoding (PyAV, OpenCV and TensorFlow release the GIL) overlaps the network
    (docs/raw_video.md measures it against multi_processing);
  * in a quiet driver, silences the traceback Beam's in-process harness prints
    for a failed bundle (`drop_harness_prints`; the run reports the failure);
  * runs the DirectRunner as its FnApiRunner (`direct_runner`), built here:
    Beam 2.77's DirectRunner first tries its Prism runner, downloading a Go
    binary from GitHub at run time (and, offline, falls back after a failed
    fetch); and its multi_processing workers start through
    `wtal_tf.features.beam_worker`, without Beam's start-up lines;
  * under the Dask runner without --dask_npartitions or --dask_partition_size,
    makes one Dask partition (task) per element when the number of elements
    is known: Beam's default puts hundreds of elements in one task, so a few
    videos would run on one worker;
  * tells how many work items the runner extracts at once (`worker_slots`):
    the DirectRunner's workers, or the threads of the Dask cluster, asked of
    its scheduler (an unreachable scheduler is one UserError line, before any
    work).
"""

import argparse
import copy
import importlib
import logging
import os
import shlex
import threading
from typing import Optional, Sequence

from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions, WorkerOptions)
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.worker import sdk_worker
from apache_beam.transforms import environments

from wtal_tf import startup
from wtal_tf.errors import UserError, unexpected_arguments
from wtal_tf.features import beam_worker

BEAM_LOG_LEVEL = "CRITICAL"  # Beam's own logs (driver and workers) below this are dropped:
# its ERRORs re-tell a failed step as tracebacks, while the failure itself reaches the
# driver as the run's exception (one line for a user error, the traceback for a bug)
DASK_LOG_LEVEL = BEAM_LOG_LEVEL  # Dask's logs in the driver and a local cluster's workers:
# their start-up lines (INFO), and a lost scheduler's tracebacks, which re-tell what the
# run's one line says (it was cut off)
DEFAULT_RUNNER = "DirectRunner"
DEFAULT_DIRECT_MODE = "multi_threading"  # the DirectRunner's workers: threads of the driver
PROCESSES_MODE = "multi_processing"  # its workers: processes (started as beam_worker)
ONE_WORKER_MODE = "in_memory"  # one worker, in the driver
IN_PROCESS_MODES = (DEFAULT_DIRECT_MODE, ONE_WORKER_MODE)  # modes without worker processes
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
DASK_MODULE = DASK_RUNNER.rsplit(".", 1)[0]
DASK_ANSWER_S = 60.0  # seconds a Dask scheduler's address has to answer the driver: Dask
# gives up on a closed port after its own connect timeout (30 s by default), but waits
# for ever on a port where another server answers (e.g. the scheduler's dashboard)


def _load_dask_options() -> Optional[type]:
  """DaskOptions, registered with Beam's option parser; None without apache-beam[dask]."""
  try:
    module = importlib.import_module(DASK_MODULE)
  except ImportError:
    return None
  return module.DaskOptions


def runner_names() -> dict[str, str]:
  """{lower-case runner name: class path} of the runners --runner accepts by name."""
  names = {path.rsplit(".", 1)[1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS}
  names[DASK_RUNNER.rsplit(".", 1)[1].lower()] = DASK_RUNNER
  return names


def resolve_runner(name: str) -> str:
  """The --runner value Beam is given: a name as Beam accepts it, DaskRunner as its class
  path, a class path as is once importable. UserError otherwise."""
  names = runner_names()
  path = names.get(name.lower()) or names.get(name.lower() + "runner")
  accepted = ", ".join(sorted(p.rsplit(".", 1)[1] for p in set(names.values())))
  if path is None and "." not in name:
    raise UserError(f"--runner={name}: unknown runner; accepted: {accepted}, or the class "
                    "path of a PipelineRunner")
  module, cls = (path or name).rsplit(".", 1)
  try:
    found = getattr(importlib.import_module(module), cls, None)
  except ImportError as e:
    extra = " (pip install 'apache-beam[dask]')" if path == DASK_RUNNER else ""
    raise UserError(f"--runner={name}: cannot import {module} ({e}){extra}") from None
  if found is None:
    raise UserError(f"--runner={name}: {module} has no {cls}; accepted: {accepted}")
  return DASK_RUNNER if path == DASK_RUNNER else name


def _parser() -> argparse.ArgumentParser:
  """Beam's own parser of every registered option class, with errors as UserError.

  Taken from PipelineOptions.get_all_options (its add_extra_args_fn hook), so it
  is exactly what Beam parses; its error() raises instead of printing usage
  and exiting.
  """
  found = []

  def keep(parser):
    def error(message):
      raise UserError(f"Beam pipeline options: {message}")
    parser.error = error
    found.append(parser)

  PipelineOptions([]).get_all_options(add_extra_args_fn=keep)
  return found[0]


def _given(args: Sequence[str]) -> set[str]:
  """The option strings given in args ("--name" of "--name=value" or "--name value")."""
  return {a.split("=", 1)[0] for a in args if a.startswith("-")}


def pipeline_options(args: Sequence[str]) -> PipelineOptions:
  """Beam options from the pass-through args (see the module docstring)."""
  args = list(args)
  dask_options = _load_dask_options()
  parser = _parser()
  _, rest = parser.parse_known_args(args)  # also checks every known option's value
  unknown = sorted({a.split("=", 1)[0] for a in rest if a.startswith("-")})
  if unknown:
    dask = [u for u in unknown if u.startswith("--dask_")] if dask_options is None else []
    hint = " (the Dask runner's options need apache-beam[dask])" if dask else ""
    raise UserError(f"unknown flags {', '.join(unknown)}: neither wtal_tf flags nor Beam "
                    f"pipeline options{hint}")
  if rest:
    raise unexpected_arguments(rest)
  given = _given(args)
  options = PipelineOptions(args)
  standard = options.view_as(StandardOptions)
  standard.runner = resolve_runner(standard.runner) if "--runner" in given else DEFAULT_RUNNER
  direct = options.view_as(DirectOptions)
  if "--direct_running_mode" not in given:
    direct.direct_running_mode = DEFAULT_DIRECT_MODE
  if "--direct_num_workers" not in given:
    direct.direct_num_workers = os.cpu_count() or 1
  elif direct.direct_num_workers < 0:
    raise UserError(f"--direct_num_workers={direct.direct_num_workers}: must be >= 0 "
                    "(0: one per core)")
  if "--default_sdk_harness_log_level" not in given:
    options.view_as(WorkerOptions).default_sdk_harness_log_level = BEAM_LOG_LEVEL
  dask_given = sorted(g for g in given if g.startswith("--dask_"))
  if dask_given and standard.runner != DASK_RUNNER:
    raise UserError(f"{', '.join(dask_given)}: options of the Dask runner, which would be "
                    f"ignored by the {standard.runner.rsplit('.', 1)[-1]}: add "
                    "--runner=DaskRunner")
  if dask_options is not None:
    dask = options.view_as(dask_options)
    for flag, value in (("--dask_npartitions", dask.npartitions),
                        ("--dask_partition_size", dask.partition_size)):
      if flag in given and (value is None or value < 1):
        raise UserError(f"{flag}={value}: must be >= 1")
  return options


def spread_over(options: PipelineOptions, num_elements: int) -> PipelineOptions:
  """`options`, for a pipeline that starts from `num_elements` elements: under the Dask
  runner, one partition (one task) per element unless --dask_npartitions or
  --dask_partition_size is given (its default packs many elements into one task).
  A copy when it differs; `options` is left as it is."""
  dask_options = _load_dask_options()
  if (dask_options is None or num_elements < 1
      or options.view_as(StandardOptions).runner != DASK_RUNNER):
    return options
  dask = options.view_as(dask_options)
  if dask.npartitions is not None or dask.partition_size is not None:
    return options
  options = copy.deepcopy(options)
  options.view_as(dask_options).npartitions = int(num_elements)
  return options


def quiet_driver_logs() -> None:
  """Beam's logs in the driver below BEAM_LOG_LEVEL are dropped: its loggers', and those
  Beam's modules send to the root logger (e.g. s3io's traceback of a failed upload,
  which the run reports as one line). The workers get the level as
  --default_sdk_harness_log_level. And the tracebacks Beam's in-process harness prints
  (drop_harness_prints)."""
  logging.getLogger("apache_beam").setLevel(BEAM_LOG_LEVEL)
  startup.drop_beam_root_logs(logging.getLevelName(BEAM_LOG_LEVEL))
  drop_harness_prints()
  # Dask's start-up lines (about 40, of the cluster the Dask runner starts without an
  # address): in this process, and in its workers, which read Dask's config from the
  # environment they inherit. A DASK_LOGGING__DISTRIBUTED of the user's own is kept.
  for name in ("distributed", "distributed.client"):  # (Dask's config sets both)
    logging.getLogger(name).setLevel(DASK_LOG_LEVEL)
  os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", DASK_LOG_LEVEL.lower())


def _is_direct(standard: StandardOptions) -> bool:
  names = runner_names()
  path = names.get(standard.runner.lower()) or names.get(standard.runner.lower() + "runner")
  return (path or standard.runner) == names[DEFAULT_RUNNER.lower()] and not standard.streaming


def _dask_threads(options: PipelineOptions) -> int:
  """The threads of the Dask cluster the Dask runner will connect to, asked of its
  scheduler; without an address or scheduler file, those of the LocalCluster the
  runner starts (one per core)."""
  kwargs = options.view_as(_load_dask_options()).get_all_options(drop_default=True,
                                                                current_only=True)
  for partitioning in ("npartitions", "partition_size"):
    kwargs.pop(partitioning, None)
  if not kwargs.get("address") and not kwargs.get("scheduler_file"):
    return os.cpu_count() or 1
  where = kwargs.get("address") or kwargs.get("scheduler_file")
  answer = {}

  def connect():
    try:
      answer["client"] = importlib.import_module("dask.distributed").Client(**kwargs)
    except BaseException as e:  # pylint: disable=broad-exception-caught
      answer["error"] = e  # (raised below, in the driver's thread)

  connecting = threading.Thread(target=connect, name="dask connect", daemon=True)
  connecting.start()  # (a daemon: one that never returns does not keep the process alive)
  try:  # (a longer --dask_connection_timeout is waited for too)
    patience = max(DASK_ANSWER_S, float(kwargs.get("timeout") or 0) + DASK_ANSWER_S / 2)
  except (TypeError, ValueError):
    patience = DASK_ANSWER_S
  connecting.join(patience)
  if connecting.is_alive():
    hint = ("is it the address of a Dask scheduler? its dashboard is another port"
            if kwargs.get("address") else "has a running scheduler written it?")
    raise UserError(f"Dask scheduler {where}: no answer in {patience:g} s ({hint})")
  error = answer.get("error")
  if isinstance(error, (OSError, ValueError, TimeoutError)):
    raise UserError(f"Dask scheduler {where}: cannot connect ({error})") from None
  if error is not None:
    raise error
  client = answer["client"]
  try:
    return sum(client.nthreads().values())
  finally:
    client.close()


def worker_slots(options: PipelineOptions) -> Optional[int]:
  """How many work items the runner extracts at once: the DirectRunner's workers
  (1 in_memory), the Dask cluster's threads; None for other runners (not known here)."""
  standard = options.view_as(StandardOptions)
  if _is_direct(standard):
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == ONE_WORKER_MODE:
      return 1
    return direct.direct_num_workers or os.cpu_count() or 1
  if standard.runner == DASK_RUNNER:
    return _dask_threads(options)
  return None


def workers_in_process(options: PipelineOptions) -> bool:
  """Whether the runner's workers are threads of this process (the DirectRunner in
  multi_threading or in_memory mode): they then share its imports."""
  return (_is_direct(options.view_as(StandardOptions))
          and options.view_as(DirectOptions).direct_running_mode in IN_PROCESS_MODES)


def _dropped(*args, **kwargs) -> None:  # pylint: disable=unused-argument
  """A `print` that prints nothing."""


def drop_harness_prints() -> None:
  """From now on in this process, if it is a quiet driver (started without --verbosity):
  Beam's in-process SDK harness prints nothing. A module-level `print` in its module
  shadows the builtin there; its one print is a failed bundle's traceback, which the
  run reports itself. Never undone: after an interrupted run, harness threads may
  still end a bundle, and fail, while the process exits."""
  if startup.is_quiet():
    sdk_worker.print = _dropped


def direct_runner(options: PipelineOptions
                  ) -> tuple[Optional[fn_runner.FnApiRunner], PipelineOptions]:
  """The runner and options to give beam.Pipeline. Under the DirectRunner, its
  FnApiRunner built as the DirectRunner builds it (the pipeline options provisioned to
  the workers), with multi_processing workers started by `beam_worker.command()`; for
  any other runner None (Beam resolves --runner) and `options` as they are.

  The pipeline's options then say in_memory where `options` say multi_processing (a
  copy; `options` are left as they are): the FnApiRunner reads the mode only to replace
  the worker environment given here.
  """
  if not _is_direct(options.view_as(StandardOptions)):
    return None, options  # (streaming: the DirectRunner runs it on its bundle-based runner)
  environment = None
  if options.view_as(DirectOptions).direct_running_mode == PROCESSES_MODE:
    environment = environments.SubprocessSDKEnvironment.from_command_string(
        shlex.join(beam_worker.command()))
    options = copy.deepcopy(options)
    options.view_as(DirectOptions).direct_running_mode = ONE_WORKER_MODE
  provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
      pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options())))
  return fn_runner.FnApiRunner(default_environment=environment, provision_info=provision), options
