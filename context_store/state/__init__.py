"""Steps 1-2 of the data flow: sources, the change journal, company document versions, user snapshot versions, skipped inputs."""
