"""How feature files were made, compared: their status records' provenance.

A provenance (wtal_tf/features/provenance.py states it; a video's status
record keeps it) maps settings (geometry, flow engine, the code's feature
version, ...) to values, and "streams" to {stream: identity of its weights}.
A setting that only one stream's features depend on (contract.STREAM_SETTINGS,
e.g. flow's engine) counts only where that stream was made.
"""

from typing import Sequence

from wtal_tf import contract

STREAMS_KEY = "streams"
WEIGHTS_SHOWN = 19  # characters of a weights identity a rerun names ("sha256:" + 12 hex)


def _of(setting: str, streams) -> bool:
  """Whether `setting` shapes features of `streams` (a setting of every stream does)."""
  return contract.STREAM_OF_SETTING.get(setting, "") in ("", *streams)


def restricted(made: dict, streams: Sequence[str]) -> dict:
  """`made` restricted to `streams` (other streams, and their own settings, left out)."""
  out = {k: v for k, v in made.items() if k != STREAMS_KEY and _of(k, streams)}
  stored = made.get(STREAMS_KEY) if isinstance(made.get(STREAMS_KEY), dict) else {}
  return {**out, STREAMS_KEY: {s: stored[s] for s in streams if s in stored}}


def shared(made: dict) -> dict:
  """The settings that shape every stream's features (not the streams, not a stream's own)."""
  return {k: v for k, v in made.items()
          if k != STREAMS_KEY and k not in contract.STREAM_OF_SETTING}


def differences(a: dict, b: dict) -> list[str]:
  """What differs between two provenances, either way ("crop_size 224 vs 56", "rgb
  weights 'random-numpy:0' vs 'sha256:…'"); streams only one of them has are left out."""
  a, b = ({k: v for k, v in x.items() if k != STREAMS_KEY} | {
      f"{s} weights": i for s, i in (x.get(STREAMS_KEY) or {}).items()} for x in (a, b))
  return [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) & set(b))
          if a.get(k) != b.get(k)]


def changes(stored, current: dict) -> list[str]:
  """What changed from a stored provenance to the current one (empty: made alike).

  Every stream of `current` must have been made; other stored streams are ignored.
  """
  if not isinstance(stored, dict):
    return ["no provenance recorded"]
  stored_streams = stored.get(STREAMS_KEY) or {}
  out = [f"{k} {stored.get(k)!r} -> {v!r}" for k, v in current.items()
         if k != STREAMS_KEY and stored.get(k) != v  # (a stream not stored: "no s features")
         and _of(k, stored_streams)]
  for s, identity in current.get(STREAMS_KEY, {}).items():
    if s not in stored_streams:
      out.append(f"no {s} features")
    elif stored_streams[s] != identity:
      out.append(f"{s} weights {stored_streams[s][:WEIGHTS_SHOWN]}… -> "
                 f"{identity[:WEIGHTS_SHOWN]}…")
  return out
