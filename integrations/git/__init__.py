"""The git port: task worktrees, task branches, merges and remote branch deletion.

Synchronous GitPython calls; the service runs them through `anyio.to_thread`. Nothing
here ever force-pushes: a rejected push is a `GitError`, never retried with force.
"""

from integrations.git._core import (
    DeleteOutcome,
    DeleteResult,
    GitError,
    MergeResult,
    RepoSpec,
    UnsafeBranchError,
    UnsafePathError,
    Worktree,
    branch_name,
    worktree_path,
)
from integrations.git.branches import (
    delete_local_branch,
    delete_remote_branch,
    push_branch,
    remote_branch_sha,
)
from integrations.git.merge import merge_branch
from integrations.git.worktrees import create_worktree, head_sha, remove_worktree

__all__ = [
    "DeleteOutcome",
    "DeleteResult",
    "GitError",
    "MergeResult",
    "RepoSpec",
    "UnsafeBranchError",
    "UnsafePathError",
    "Worktree",
    "branch_name",
    "create_worktree",
    "delete_local_branch",
    "delete_remote_branch",
    "head_sha",
    "merge_branch",
    "push_branch",
    "remote_branch_sha",
    "remove_worktree",
    "worktree_path",
]
