"""Human-in-the-loop review of SeFa directions (the HAM10000 study's "Identify Relevant Transformations").

`store` reads and writes the transformations file (accepted entries, a `rejected:` list, who/when/which
checkpoint); `render` turns a (generator, layer range, direction, magnitude, source latent) into an edited
image with its LPIPS (AlexNet) to the source; `jobs` runs a projection in a worker thread the page's session
owns (one at a time, cancellable); `app` is the Streamlit page `dermsynth review` starts.
Both `store` and `render` work without Streamlit, so the review logic is tested without a browser.
"""
