"""Search strategies (ask/tell) and the search loop."""
