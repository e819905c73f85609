"""The project's error family: every mistake a user can make at any door is one of these.

The CLI catches :class:`DistCtrError` (and only it): the message is printed as one line and the exit status is 2.
Anything else is a bug in the project and keeps its traceback. Third-party exceptions are translated into one of
these where they are raised, with the URL, file, key, feature or table in the message.

Each class also derives from the builtin it replaces (``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so
callers that catch the builtin keep working.

>>> issubclass(CheckpointError, DistCtrError), issubclass(CheckpointError, ValueError)
(True, True)
>>> str(RegistryError("s3://models/ctr: no published version"))
's3://models/ctr: no published version'
"""

from __future__ import annotations


class DistCtrError(Exception):
    """Base of every user-facing error; the message is one line that names the offending thing."""


class ConfigErrorBase(DistCtrError, ValueError):
    """A config file, section, key or value is wrong (see ``dist_ctr.strict.ConfigError``)."""


class SchemaErrorBase(DistCtrError, ValueError):
    """A feature schema is invalid (see ``dist_ctr.schema.features.SchemaError``)."""


class DataErrorBase(DistCtrError, ValueError):
    """A data set cannot be read as the schema says (see ``dist_ctr.data.errors.DataError``)."""


class CheckpointError(DistCtrError, ValueError):
    """A checkpoint is missing, torn, corrupt, or does not fit the job (model, config, tables)."""


class ModelFileError(DistCtrError, ValueError):
    """An exported model file is missing, truncated, not weights-only, or not a dist_ctr model."""


class StorageError(DistCtrError, OSError):
    """Object storage or a file system refused or failed a request (endpoint, bucket, credentials, path)."""


class TrainingFailure(DistCtrError, RuntimeError):
    """Training cannot go on (non-finite loss or values, bad labels); the message says where."""


class LaunchError(DistCtrError, ValueError):
    """A launcher or job server refused the work (address, submission id, authentication)."""


class RegistryError(DistCtrError, ValueError):
    """A model registry is unreachable, malformed, locked, or has no such model / version."""


class PipelineError(DistCtrError, ValueError):
    """A retraining run cannot go on: missing or incomplete partitions, an empty window, a bad parent."""
