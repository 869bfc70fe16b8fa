// The demo SPA: routes through the History API (the tracker records each as a page view), a few
// buttons that track events, the consent banner, and the pipeline's counts refreshed every 2 s.
(() => {
  const T = window.WebAnalytics;
  const $ = (id) => document.getElementById(id);
  let created = 0;
  const titles = { "/": "Home", "/products": "Products", "/cart": "Your cart", "/checkout": "Checkout" };
  const render = () => ($("title").textContent = titles[location.pathname] || "Not found");

  T.init({
    ...window.DEMO_CONFIG,
    // Every event the tracker makes: counted on the page, and told to a test driver if there is one.
    onEvent: (e) => {
      $("created").textContent = ++created;
      if (window.__waCreated) window.__waCreated(e);
    },
  });
  const consentBanner = () => {
    const asked = localStorage.getItem("_wa_c");
    $("consent").hidden = !window.DEMO_CONFIG.requireConsent || asked != null;
  };
  consentBanner();
  $("accept").onclick = () => { T.consent(true); consentBanner(); };
  $("decline").onclick = () => { T.consent(false); consentBanner(); };

  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-route]");
    if (!a) return;
    ev.preventDefault();
    history.pushState({}, "", a.getAttribute("href"));
    render();
  });
  addEventListener("popstate", render);
  $("add").onclick = (ev) => T.track("add_to_cart", { product: ev.target.dataset.product, price_cents: 2500 });
  $("buy").onclick = () => T.track("purchase", { amount: 25, currency: "EUR" });
  $("login").onclick = () => { T.identify("demo-user"); T.track("login"); };
  render();

  const refresh = async () => {
    try {
      const r = await (await fetch("/counts")).json();
      $("counts").innerHTML = r.error
        ? `<tr><td colspan=2>${r.error.replace(/</g, "&lt;")}</td></tr>`
        : Object.entries(r.counts).map(([t, n]) => `<tr><td>${t}</td><td>${n}</td></tr>`).join("");
    } catch { /* the demo server is gone; try again */ }
  };
  refresh();
  setInterval(refresh, 2000);
})();
