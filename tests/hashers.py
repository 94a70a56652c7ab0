"""A fast password hasher for the test process.

Django hashes passwords with PBKDF2 at 1,000,000 iterations: about 0.7 s of CPU per user created or logged in,
which a suite that makes hundreds of users spent minutes on. This is the same algorithm (``pbkdf2_sha256``) at
1,000 iterations: the iteration count is part of the stored hash, so a server started with the project's own
settings (a ``LiveServer``) still verifies these passwords, and upgrades the hash at its first login as it would
any older hash.
"""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1000
