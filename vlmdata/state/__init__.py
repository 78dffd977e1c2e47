"""What a root holds: its folder checks, the journal of placed files, and the lock file of hashes."""
from vlmdata.state.root import Root  # noqa: F401
from vlmdata.state.journal import Journal, JournalEntry  # noqa: F401
from vlmdata.state.lockfile import LockFile, LockEntry  # noqa: F401
