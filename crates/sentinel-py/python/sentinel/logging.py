"""The ``sentinel`` logger, as the original exposed it: warnings on lease loss and unrecorded
outcomes, nothing on a healthy run."""

import logging as _logging

#: The logger every part of Sentinel writes to.
logger = _logging.getLogger("sentinel")
