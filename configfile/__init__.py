"""Config as code: the cluster's configuration (nodes, model profiles, deployments, API key
metadata, never secrets) as one YAML file, exported and applied with `clawdbot config`.

`document` reads and checks a file (pure), `current` reads the database into the same shape,
`changes` compares the two (pure), `applying` makes the database match in one transaction."""
