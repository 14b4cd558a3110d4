"""OpenVINO without telemetry: the project imports ``openvino`` (and, in the toolchain, ``nncf``) only through here.

House rule: nothing phones home and nothing is downloaded at run time; OpenVINO telemetry is off wherever
OpenVINO is used. A privacy audit found that loading an ``.xml`` in the runtime looked up an analytics host in
DNS and wrote ``~/intel/openvino_ga_cid``, and that the OpenVINO export made 57 connection attempts
(docs/PRIVACY-NETWORK.md has the measurements).

What sends (read in the installed openvino 2026.4.1, openvino-telemetry 2025.2.0, nncf 3.4.0):

* The sender is the ``openvino-telemetry`` package (``openvino_telemetry``), a declared requirement of both
  ``openvino`` and ``nncf``. Its GA4 backend POSTs each event to ``https://www.google-analytics.com/mp/collect``
  from a forked process (``backend/backend_ga4.py``) and keeps a client id ``~/intel/openvino_ga_cid`` and a usage
  counter ``~/intel/stats``.
* ``import openvino`` imports ``openvino.tools.ovc`` (for ``openvino.convert_model``), whose ``__init__`` sends an
  ``ov/import`` event; each ``convert_model`` call sends more (session start, version, parameters, framework,
  conversion result, session end).
* ``import nncf`` creates ``nncf.telemetry.wrapper.NNCFTelemetry``; ``nncf.quantize`` and friends send events
  through ``@tracked_function``.
* Consent is only the file ``~/intel/openvino_telemetry`` (``0`` off, ``1`` on). OpenVINO and NNCF pass
  ``enable_opt_in_dialog=False``, so a missing file means ON. No variable of OpenVINO's turns it off; the only
  variables read are the CI markers ``CI=true``, ``TF_BUILD``, ``JENKINS_URL`` (both pass ``disable_in_ci=True``)
  and, for NNCF only, ``NNCF_CI`` / ``NNCF_DEV`` (checked after the client-id file is already written).
* The C++ core (``ov.Core()``, ``read_model``, ``compile_model``, inference) imports no socket or resolver function
  in any of its shared libraries, and made no network system call under ``strace`` once telemetry was off.

How it is turned off: openvino and nncf both import ``openvino_telemetry`` inside ``try/except ImportError`` and
then use their own no-op stubs (``openvino.tools.ovc.telemetry_stub.Telemetry``, nncf's ``NNCFTelemetryStub``).
:func:`disable_telemetry` puts ``None`` in ``sys.modules["openvino_telemetry"]``, which by Python's documented
import rules makes that import raise ``ModuleNotFoundError``, so the stubs are used: nothing is sent, nothing is
written, and no environment variable or file of the user's is changed. It is per process and must run before the
first ``import openvino``/``import nncf`` of the process (a warning is logged if it comes too late).

Not used: ``opt_in_out --opt_out`` (writes ``~/intel/openvino_telemetry``, fails on a read-only home, and itself sends
an opt-out event), ``CI=true`` (changes the behaviour of unrelated tools), uninstalling ``openvino-telemetry``
(both packages require it, so pip puts it back).

Standalone: standard library only, like the rest of the runtime.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType

TELEMETRY_MODULE = "openvino_telemetry"

_log = logging.getLogger(__name__)
_warned: list[bool] = []  # warn once per process


def disable_telemetry() -> bool:
    """Make ``openvino_telemetry`` unimportable in this process so openvino and nncf use their no-op stubs.

    Returns True when telemetry is off for this process; False (and a logged warning) when the package was already
    imported, i.e. openvino or nncf was imported some other way first and may already have sent its events.
    """
    if TELEMETRY_MODULE not in sys.modules:
        sys.modules[TELEMETRY_MODULE] = None  # type: ignore[assignment]  # import raises ModuleNotFoundError
    if sys.modules[TELEMETRY_MODULE] is None:
        return True
    if not _warned:
        _warned.append(True)
        _log.warning("%s was imported before telemetry could be disabled (openvino or nncf imported directly?): "
                     "OpenVINO telemetry may be active in this process; import them through %s", TELEMETRY_MODULE,
                     __name__)
    return False


def import_openvino() -> ModuleType:
    """``import openvino`` with telemetry off (raises ImportError as the plain import would)."""
    disable_telemetry()
    return importlib.import_module("openvino")


def import_nncf() -> ModuleType:
    """``import nncf`` with telemetry off (toolchain only: the runtime never uses NNCF)."""
    disable_telemetry()
    return importlib.import_module("nncf")
