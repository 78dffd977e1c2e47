"""HTTP basics shared by every downloader: the session, the retry loop, URL display and mirror rewriting, the errors."""
