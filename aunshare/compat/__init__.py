"""Drop-in front ends for code written against another process API.

:mod:`aunshare.compat.asyncio` has ``create_subprocess_exec`` and
``create_subprocess_shell`` with asyncio's :class:`asyncio.subprocess.Process`
semantics; :mod:`aunshare.compat.trio` has ``run_process`` and
``open_process`` with trio's. Both start the child with aunshare (no fork
of the interpreter, pidfd-based waiting, typed errors) and take one extra
keyword, ``command=``: a callable given the :class:`~aunshare.Command`
before the spawn, to add isolation without leaving the familiar API.
"""
