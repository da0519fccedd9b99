"""tests/vm holds tests that run inside the qemu guest, where tests/vm/run_vm.py sets TETRAGON_IN_VM=1.

On the host they are not even collected: they expect a kernel with kprobes, trampolines and BPF LSM.
The host side of the VM tests is tests/e2e/test_vm_kernels.py.
"""

from __future__ import annotations

import os

IN_VM = os.environ.get("TETRAGON_IN_VM") == "1"

collect_ignore_glob = [] if IN_VM else ["test_*.py"]
