"""Homomorphically encrypted views (CKKS, via TenSEAL) with no decryption oracle.

Three flows, each a small module with one job (see docs/encryption.md):

1. *encrypted view* — the gateway encrypts the plan-applied, clipped numeric columns of a
   dataset under its own per-dataset key (:mod:`.keystore`) and streams the ciphertexts with
   the public context only (:mod:`.prepare`, :mod:`.container`, :mod:`.token`);
2. *aggregate release* — the client *declares* an aggregate over a view
   (:mod:`.computation`); the gateway evaluates that declaration itself on a fresh encryption
   of the same plaintext, decrypts only its own result (a few slots), and releases it with
   differential-privacy noise that also floods the CKKS error (:mod:`.noise`). A ciphertext
   chosen by a client is never decrypted;
3. *client-held keys* — the client sends a public context and encrypted weights; the gateway
   computes on them with DP-noised statistics of the data and returns ciphertexts only the
   client can decrypt (:mod:`.query`).

:mod:`.service` wires these to the gateway (governed reads, keys, ledger, rate limits);
:mod:`.client` is what a data scientist imports. TenSEAL is an optional dependency (the
``he`` extra): it is imported only where ciphertexts are made or read.
"""
