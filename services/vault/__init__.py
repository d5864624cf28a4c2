"""token-vault: encrypted, versioned secrets with key rotation and audit."""
