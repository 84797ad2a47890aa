"""The allocator settings (components/allocator.py): what reaches the processes started after them, and that they
stop the page-fault churn of a training loop there."""

import os
import subprocess
import sys

from fairforget.components.allocator import (MMAP_THRESHOLD, TOP_PAD, keep_freed_memory, tunables_for_children,
                                             without_tunables)

# a child process: 10 steps of a small conv net on (64, 1, 28, 28) batches, one thread; prints its minor faults
TRAINING_LOOP = """
import resource, torch
torch.set_num_threads(1)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, padding=1),
                          torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64 * 28 * 28, 10))
optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
for step in range(12):
    if step == 2:  # after the first allocations of every size
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    optimizer.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_the_settings_are_appended_to_the_users_tunables_and_theirs_win():
    user = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=5:glibc.cpu.hwcaps=-AVX512F", "MALLOC_TOP_PAD_": "7"}
    tunables = tunables_for_children(user).split(":")
    assert tunables == ["glibc.malloc.trim_threshold=5", "glibc.cpu.hwcaps=-AVX512F",
                        f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}"]
    assert f"glibc.malloc.top_pad={TOP_PAD}" in tunables_for_children({}).split(":")


def page_faults(env: dict) -> int:
    out = subprocess.run([sys.executable, "-c", TRAINING_LOOP], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_a_process_started_after_it_trains_without_faulting_its_memory_in_again():
    assert keep_freed_memory()  # glibc (Debian): the project's machines
    defaults = without_tunables()
    kept = page_faults(dict(os.environ))
    churned = page_faults(defaults)
    assert kept * 5 < churned, (kept, churned)
