"""TensorFlow's file-layer errors as user errors: which they are, and their message on one line."""

from __future__ import annotations

import re

import tensorflow as tf

# What TensorFlow's file layer (tf.io.gfile, TFRecord readers) raises for a missing, unreadable or wrong path
# (a path that is a directory is a FailedPreconditionError): user errors, but not OSErrors.
FILE_LAYER_ERRORS = (
    tf.errors.NotFoundError,
    tf.errors.PermissionDeniedError,
    tf.errors.FailedPreconditionError,
    tf.errors.AlreadyExistsError,
)
# What eager TensorFlow wraps around such an error's message: the function it ran in, the op and its name.
_TF_DECORATIONS = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$")


def file_error_message(error: tf.errors.OpError) -> str:
    """The first line of a TensorFlow error's message, without the function and op it names."""
    return _TF_DECORATIONS.sub("", error.message.splitlines()[0] if error.message else "")
