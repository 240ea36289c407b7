"""Where logs come from besides a user's files: the built-in synthetic generator and the download of public
data sets from their publishers."""
